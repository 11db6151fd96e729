"""POST /api/jobs and GET /api/jobs/<id> against the real database and Redis."""

from __future__ import annotations

import json

import redis
from sqlalchemy import text

from overlay.config import Settings
from web.app import create_app
from web.deps import ApiDeps
from web.dispatch import Dispatcher
from web.waiter import JobWaiter
from workers.queues import FLAG_TTL_S, PASS_FLAG, PassRequests

SMOKE = {"job_id": "m2-smoke", "image": "alpine", "cmd": ["echo", "hi"]}


def test_submit_stores_a_queued_job_with_its_enqueue_time(client):
    # When the README's job is submitted
    created = client.post("/api/jobs", json=SMOKE)
    # Then it is created QUEUED, and reading it back says the same
    assert created.status_code == 201, created.json
    shown = client.get("/api/jobs/m2-smoke").json
    assert shown["state"] == "QUEUED"
    assert shown["timestamps"]["enqueued"]
    assert shown["request"]["cmd"] == ["echo", "hi"]
    assert shown["request"]["image"] == "alpine"
    assert shown["attempt"] == 0


def test_the_jobs_table_keeps_the_state_in_a_column_named_status(client, sessions):
    client.post("/api/jobs", json=SMOKE)
    with sessions() as s:
        rows = s.execute(text("select job_id, status from jobs")).all()
    assert rows == [("m2-smoke", "QUEUED")]


def test_submit_sends_the_schedule_message_to_jobs_queue(client, redis_url):
    client.post("/api/jobs", json=SMOKE)
    messages = redis.Redis.from_url(redis_url).lrange("jobs:queue", 0, -1)
    assert len(messages) == 1
    assert json.loads(messages[0])["headers"]["task"] == "overlay.schedule"


def test_submits_before_a_pass_begins_share_one_schedule_message_and_later_ones_send_anew(
        client, redis_url):
    # Given no scheduler taking messages, three submits ask for one pass between them
    for i in range(3):
        assert client.post("/api/jobs", json={"cmd": ["true"], "job_id": f"c-{i}"}).status_code == 201
    broker = redis.Redis.from_url(redis_url)
    assert broker.llen("jobs:queue") == 1
    # When a pass begins (it will read all three), the next submit needs a message of its own
    PassRequests(redis_url).begin()
    client.post("/api/jobs", json={"cmd": ["true"], "job_id": "c-3"})
    assert broker.llen("jobs:queue") == 2
    # And a flag left by a lost message expires, so requests are never held back for long
    assert 0 < broker.ttl(PASS_FLAG) <= FLAG_TTL_S


def test_submit_without_a_job_id_gets_one(client):
    created = client.post("/api/jobs", json={"cmd": ["true"]})
    assert created.status_code == 201
    assert created.json["job_id"].startswith("job-")


def test_a_duplicate_job_id_is_409_and_writes_nothing(client, count_rows):
    client.post("/api/jobs", json=SMOKE)
    before = count_rows()
    again = client.post("/api/jobs", json={**SMOKE, "cmd": ["false"]})
    assert again.status_code == 409
    assert again.json["errors"]["job_id"] == "m2-smoke"
    assert count_rows() == before
    assert client.get("/api/jobs/m2-smoke").json["request"]["cmd"] == ["echo", "hi"]


def test_an_unknown_job_is_404_naming_it(client):
    response = client.get("/api/jobs/nope")
    assert response.status_code == 404
    assert response.json["message"] == "job 'nope' does not exist"
    assert client.post("/api/jobs/nope/cancel").status_code == 404


def test_env_values_never_come_back(client):
    client.post("/api/jobs", json={**SMOKE, "env": {"HF_TOKEN": "s3cret"}})
    shown = client.get("/api/jobs/m2-smoke").get_data(as_text=True)
    listed = client.get("/api/jobs").get_data(as_text=True)
    assert "s3cret" not in shown and "s3cret" not in listed
    assert json.loads(shown)["request"]["env"] == {"HF_TOKEN": "***"}


def test_a_down_broker_still_stores_the_job_and_returns_201(settings: Settings, sessions):
    # Given an API whose broker does not answer
    dead = Dispatcher("redis://127.0.0.1:1/0")
    deps = ApiDeps(settings=settings, sessions=sessions, dispatcher=dead,
                        waiter=JobWaiter(settings.database_url))
    app = create_app(settings, deps=deps)
    # When a job is submitted
    response = app.test_client().post("/api/jobs", json=SMOKE)
    # Then it is stored anyway, for reconcile to dispatch
    assert response.status_code == 201
    with sessions() as s:
        assert s.execute(text("select status from jobs")).scalar_one() == "QUEUED"


def test_wait_returns_as_soon_as_the_job_ends(client, sessions):
    # Given a queued job and a request waiting up to 10 s on it
    import threading
    import time as clock

    from overlay.states import JobState
    from overlay.store import jobs as store

    client.post("/api/jobs", json={"job_id": "w", "cmd": ["true"]})

    def finish_soon() -> None:
        clock.sleep(0.3)
        with sessions.begin() as s:
            store.transition(s, "w", JobState.CANCELLED, now=store_now(), reason="test")

    threading.Thread(target=finish_soon).start()
    started = clock.monotonic()
    # When it waits
    shown = client.get("/api/jobs/w?wait=10").json
    # Then it comes back with the end, long before the 10 s
    assert shown["state"] == "CANCELLED"
    assert clock.monotonic() - started < 3


def test_wait_gives_up_after_the_requested_seconds_with_the_current_state(client):
    client.post("/api/jobs", json={"job_id": "w2", "cmd": ["true"]})
    assert client.get("/api/jobs/w2?wait=0.3").json["state"] == "QUEUED"
    assert client.get("/api/jobs/w2?wait=-1").status_code == 422


def store_now():
    from datetime import UTC, datetime

    return datetime.now(UTC)


def test_pass_requests_do_not_fail_when_redis_is_away():
    # A port nothing listens on: the scheduler's pass must still run, and a requester
    # is told to send (the broker's own retries and errors then take over)
    away = PassRequests("redis://127.0.0.1:1/0", timeout_s=0.5)
    away.begin()
    assert away.want() is True
