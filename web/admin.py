"""/api/admin: operator actions that bypass the normal flow but not the state machine."""

from __future__ import annotations

import logging
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from overlay.logfmt import job_fields
from overlay.states import JobState
from overlay.store import jobs as store
from web.deps import deps
from web.schemas import JobSchema, StateChangeSchema
from web.views import job_view

blp = Blueprint("admin", __name__, url_prefix="/api/admin", description="Admin")
log = logging.getLogger(__name__)


@blp.route("/jobs/<job_id>/state")
class AdminJobStateChange(MethodView):
    @blp.arguments(StateChangeSchema)
    @blp.response(200, JobSchema)
    @blp.alt_response(409, description="the state machine forbids this transition")
    def post(self, body: dict[str, Any], job_id: str) -> dict[str, Any]:
        """Move a job to another state, checked by the state machine (admin)."""
        svc = deps()
        target = JobState(body["state"])
        with svc.transaction() as s:
            job = store.transition(
                s, job_id, target, now=svc.clock(), reason=body.get("reason", "set by admin")
            )
        log.warning("job %s set to %s by admin: %s", job_id, target.value, job.reason,
                    extra=job_fields(job_id, job.node, state=target.value, attempt=job.attempt))
        if target is JobState.QUEUED or target.terminal:
            svc.dispatcher.schedule()
        return job_view(job)
