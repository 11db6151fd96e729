"""/health (the process is up) and /ready (Postgres and Redis both answer)."""

from __future__ import annotations

from typing import Any

import redis
from flask.views import MethodView
from flask_smorest import Blueprint

from overlay.store.session import ping
from web.deps import deps
from web.schemas import HealthSchema, ReadySchema

blp = Blueprint("health", __name__, description="Probes")


@blp.route("/health")
class Health(MethodView):
    @blp.response(200, HealthSchema)
    def get(self) -> dict[str, str]:
        """The process is up (no store is asked)."""
        return {"status": "ok"}


@blp.route("/ready")
class Ready(MethodView):
    @blp.response(200, ReadySchema)
    @blp.alt_response(503, schema=ReadySchema, description="a store did not answer; it says which")
    def get(self) -> tuple[dict[str, Any], int]:
        """200 when Postgres and Redis both answer, else 503 naming the one that does not."""
        svc = deps()
        checks = {"postgres": check_postgres(), "redis": check_redis(svc.settings.redis_url)}
        ok = all(c["ok"] for c in checks.values())
        return checks, 200 if ok else 503


def check_postgres() -> dict[str, Any]:
    try:
        with deps().sessions() as s:
            ping(s)
        return {"ok": True}
    except Exception as e:
        return {"ok": False, "error": str(getattr(e, "orig", e)).strip()}


def check_redis(url: str) -> dict[str, Any]:
    try:
        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        try:
            client.ping()
        finally:
            client.close()
        return {"ok": True}
    except redis.RedisError as e:
        return {"ok": False, "error": str(e)}
