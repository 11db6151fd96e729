"""/health and /ready against the real Postgres and Redis; any route while Postgres is away."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import create_engine

from overlay.store.session import make_sessionmaker
from web.app import create_app
from web.deps import ApiDeps
from web.dispatch import Dispatcher
from web.waiter import JobWaiter


def test_ready_is_200_when_postgres_and_redis_both_answer(client):
    answer = client.get("/ready")
    assert answer.status_code == 200
    assert answer.json == {"postgres": {"ok": True}, "redis": {"ok": True}}


def test_health_asks_no_store(client):
    assert client.get("/health").json == {"status": "ok"}


def test_a_request_while_postgres_is_away_is_a_503_even_from_the_token_check(settings):
    # Given an API whose Postgres does not answer (a port nobody listens on), with no
    # token configured: the token check before every view asks Postgres whether users
    # hold tokens (CI saw this check's error come back as a bare 500)
    away = "postgresql+psycopg2://postgres@127.0.0.1:1/overlay"
    configured = replace(settings, database_url=away)
    engine = create_engine(away, connect_args={"connect_timeout": 2})
    waiter = JobWaiter(settings.database_url)
    deps = ApiDeps(settings=configured, sessions=make_sessionmaker(engine),
                   dispatcher=Dispatcher(settings.redis_url), waiter=waiter)
    client = create_app(configured, deps=deps).test_client()
    try:
        # When a user lists jobs, and another sends a token that looks like a user's
        listing = client.get("/api/jobs")
        with_token = client.get("/api/jobs", headers={"Authorization": "Bearer ovl_abcdefgh_" + "x" * 40})
        # Then both are 503s that say Postgres did not answer
        for answer in (listing, with_token):
            assert answer.status_code == 503, answer.json
            assert answer.json["code"] == 503 and "Postgres did not answer" in answer.json["message"]
    finally:
        waiter.close()
        engine.dispose()
