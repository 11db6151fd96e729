"""/api/arrays: a job array's counts and tasks, cancelling it whole; and submitting one
(``POST /api/jobs`` with ``array``, answered here with the array, never its tasks)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Response, jsonify
from flask.views import MethodView
from flask_smorest import Blueprint

from overlay import arrays
from overlay.dependencies import Dependency
from overlay.errors import InvalidField
from overlay.identity import check_may_see
from overlay.model import Job, JobSpec
from overlay.states import JobState
from overlay.store import arrays as store
from overlay.store import dependencies
from web.auth import current_caller
from web.deps import deps
from web.schemas import ArrayQuerySchema, ArraySchema
from web.views import job_view

blp = Blueprint("arrays", __name__, url_prefix="/api/arrays", description="Job arrays")
log = logging.getLogger(__name__)


def submit(template: JobSpec, expression: str, needs: list[Dependency]) -> Response:
    """Store the array ``template.job_id`` and its tasks, then wake the scheduler: a 201 with
    the array and its counts. Raises InvalidField (a range ending before it starts, a bad
    dependency), DuplicateJob."""
    try:
        tasks = arrays.parse_array(expression)
    except arrays.ArrayError as e:
        raise InvalidField("array", str(e)) from e
    svc = deps()
    with svc.transaction() as s:
        task_ids = {template.job_id, *(arrays.task_id(template.job_id, i) for i in tasks.indices)}
        dependencies.check(s, task_ids, needs)
        array = store.insert_array(s, template, tasks, expression=expression, now=svc.clock())
        dependencies.add_to_array(s, array.array_id, needs)
    log.info("array %s submitted: %d task(s), at most %s at once", array.array_id, array.size,
             array.max_running or "all")
    svc.dispatcher.schedule()
    answer = jsonify(ArraySchema().dump(view(array)))
    answer.status_code = 201
    return answer


def view(array: store.Array, tasks: list[Job] | None = None, *, limit: int = 0,
         offset: int = 0) -> dict[str, Any]:
    return {"array_id": array.array_id, "expression": array.expression, "size": array.size,
            "max_running": array.max_running, "user": array.user, "account": array.account,
            "submitted_at": array.submitted_at, "counts": array.counts,
            "tasks": [job_view(j) for j in tasks or []], "limit": limit, "offset": offset}


def read_array(array_id: str) -> store.Array:
    """The array, if the caller may see it: raise JobNotFound, NotAllowed (403)."""
    with deps().transaction() as s:
        array = store.get_array(s, array_id)
    owner = JobSpec(job_id=array_id, cmd=("",), user=array.user, account=array.account)
    check_may_see(current_caller(), owner)
    return array


@blp.route("/<array_id>")
class ArrayById(MethodView):
    @blp.arguments(ArrayQuerySchema, location="query")
    @blp.response(200, ArraySchema)
    def get(self, query: dict[str, Any], array_id: str) -> dict[str, Any]:
        """An array: its %N limit, its tasks' counts per state, and a page of its tasks by index."""
        array = read_array(array_id)
        state = JobState(query["state"]) if "state" in query else None
        with deps().transaction() as s:
            page = store.tasks(s, array_id, limit=query["limit"], offset=query["offset"], state=state)
        return view(array, page, limit=query["limit"], offset=query["offset"])


@blp.route("/<array_id>/cancel")
class ArrayCancel(MethodView):
    @blp.response(200, ArraySchema)
    def post(self, array_id: str) -> dict[str, Any]:
        """Cancel every task of the array that has not ended; running ones are killed by their agents."""
        svc = deps()
        read_array(array_id)  # the caller's, or 403
        with svc.transaction() as s:
            active = store.cancel_array(s, array_id, now=svc.clock())
        for job in active:
            if job.node is not None and job.attempt:
                svc.dispatcher.cancel(job.node, job.job_id, job.attempt)
        log.info("array %s cancelled by user (%d task(s) were placed or running)", array_id, len(active))
        svc.dispatcher.schedule()  # its dependents may now be judged
        return view(read_array(array_id))
