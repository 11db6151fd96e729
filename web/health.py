"""/health (the process is up) and /ready (Postgres and Redis both answer)."""

from __future__ import annotations

from typing import Any

import redis
from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import text

from web.services import services

blp = Blueprint("health", __name__)


@blp.get("/health")
def health() -> ResponseReturnValue:
    return jsonify(status="ok")


@blp.get("/ready")
def ready() -> ResponseReturnValue:
    svc = services()
    checks = {"postgres": check_postgres(), "redis": check_redis(svc.settings.redis_url)}
    ok = all(c["ok"] for c in checks.values())
    return jsonify(checks), 200 if ok else 503


def check_postgres() -> dict[str, Any]:
    try:
        with services().sessions() as s:
            s.execute(text("select 1"))
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
