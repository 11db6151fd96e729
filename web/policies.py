"""/api/policies: which placement policy is active, which exist, and switching."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from overlay.policies import DESCRIPTIONS, SUPPORTED, get_policy
from overlay.store import cluster_state
from web.deps import deps
from web.schemas import PoliciesSchema, PolicyChangeSchema

blp = Blueprint("policies", __name__, url_prefix="/api/policies", description="Placement policies")


def policies_view(active: str) -> dict[str, Any]:
    return {"active": active, "supported": list(SUPPORTED), "descriptions": dict(DESCRIPTIONS)}


@blp.route("")
class Policies(MethodView):
    @blp.response(200, PoliciesSchema)
    def get(self) -> dict[str, Any]:
        """The active placement policy and the supported ones."""
        svc = deps()
        with svc.transaction() as s:
            return policies_view(cluster_state.active_policy(s, default=svc.settings.scheduler_policy))


@blp.route("/active")
class ActivePolicy(MethodView):
    @blp.arguments(PolicyChangeSchema)
    @blp.response(200, PoliciesSchema)
    def put(self, body: dict[str, str]) -> dict[str, Any]:
        """Switch the placement policy (admin); the next scheduling pass uses it."""
        get_policy(body["policy"])  # raises UnknownPolicy, a 422
        svc = deps()
        with svc.transaction() as s:
            cluster_state.set_active_policy(s, body["policy"])
        svc.dispatcher.schedule()
        return policies_view(body["policy"])
