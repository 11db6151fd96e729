"""/health and /ready against the real Postgres and Redis."""

from __future__ import annotations


def test_ready_is_200_when_postgres_and_redis_both_answer(client):
    answer = client.get("/ready")
    assert answer.status_code == 200
    assert answer.json == {"postgres": {"ok": True}, "redis": {"ok": True}}


def test_health_asks_no_store(client):
    assert client.get("/health").json == {"status": "ok"}
