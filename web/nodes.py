"""/api/nodes: live nodes and their GPUs; drain and undrain (admin)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from overlay.store import nodes as store
from overlay.store import sharing
from overlay.store.session import resolve_now
from web.deps import deps
from web.schemas import NodeListQuerySchema, NodeListSchema
from web.views import node_view

blp = Blueprint("nodes", __name__, url_prefix="/api/nodes", description="Nodes and GPUs")


def list_view(include_offline: bool) -> dict[str, Any]:
    svc = deps()
    with svc.transaction() as s:
        now = resolve_now(s, svc.clock())
        infos = store.node_infos(
            s, now=now, ttl_s=svc.settings.node_ttl_s, include_offline=include_offline
        )
        owners = sharing.gpu_owners(s)
    return {"nodes": [node_view(i, now=now, owners=owners) for i in infos]}


@blp.route("")
class Nodes(MethodView):
    @blp.arguments(NodeListQuerySchema, location="query")
    @blp.response(200, NodeListSchema)
    def get(self, query: dict[str, str]) -> dict[str, Any]:
        """Live nodes: online and heard from within NODE_TTL_S (``?include=offline`` adds the dead ones)."""
        return list_view(include_offline=query.get("include") == "offline")


def set_draining(name: str, draining: bool) -> dict[str, Any]:
    svc = deps()
    with svc.transaction() as s:
        store.set_draining(s, name, draining)
    if not draining:
        svc.dispatcher.schedule()
    return {"name": name, "draining": draining}


@blp.route("/<name>/drain")
class Drain(MethodView):
    @blp.response(200)
    def post(self, name: str) -> dict[str, Any]:
        """Drain a node (admin): it takes no new jobs; running ones finish."""
        return set_draining(name, True)


@blp.route("/<name>/undrain")
class Undrain(MethodView):
    @blp.response(200)
    def post(self, name: str) -> dict[str, Any]:
        """Undrain a node (admin): it takes new jobs again."""
        return set_draining(name, False)
