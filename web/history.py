"""/api/admin/history: the recorded fleet and jobs, streamed as JSON lines, for
``overlay simulate --from-history`` (admin: it shows every user's jobs)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from flask import Response, stream_with_context
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from overlay.store import history as store
from overlay.store.session import resolve_now
from web.deps import deps

blp = Blueprint("history", __name__, url_prefix="/api/admin/history", description="Admin")


class HistoryQuerySchema(Schema):
    # Query values arrive as strings: "2592000" is an integer here.
    since_s = fields.Integer(load_default=30 * 86400, validate=validate.Range(min=1, max=10 * 365 * 86400),
                             metadata={"description": "jobs submitted within this many seconds"})


@blp.route("")
class History(MethodView):
    @blp.arguments(HistoryQuerySchema, location="query")
    @blp.response(200, description="JSON lines")
    @blp.doc(responses={"200": {
        "description": "one JSON object a line: first {\"since\": ...}, then {\"node\": {...}} per "
                       "node (its GPUs and labels), then {\"job\": {...}} per job that ran to an end, "
                       "in submit order (its request, user, account, node, and the enqueued, placed, "
                       "started and finished times)",
        "content": {"application/x-ndjson": {"schema": {"type": "string"}}}}})
    def get(self, query: dict[str, Any]) -> Response:
        """The recorded fleet and the jobs that ran, streamed (admin)."""
        return Response(stream_with_context(lines(query["since_s"])), mimetype="application/x-ndjson")


def lines(since_s: int) -> Iterator[str]:
    svc = deps()
    with svc.transaction() as s:
        since = resolve_now(s, svc.clock()) - timedelta(seconds=since_s)
        yield json.dumps({"since": since.isoformat()}) + "\n"
        for node in store.fleet(s):
            yield json.dumps({"node": node}) + "\n"
        for job in store.ran_since(s, since):
            yield json.dumps({"job": job}) + "\n"
