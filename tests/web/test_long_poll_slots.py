"""Long-polls (GET /api/jobs/<id>?wait=) take at most API_THREADS - API_RESERVED_THREADS of an
API process's threads; one more is answered 429 with Retry-After, at once, and changes nothing."""

from __future__ import annotations

from dataclasses import replace

import pytest

from overlay.errors import TooManyWaiters
from web.app import create_app
from web.deps import ApiDeps
from web.dispatch import Dispatcher
from web.waiter import RETRY_AFTER_S, JobWaiter


@pytest.fixture
def one_slot(settings, sessions):
    """An API whose waiter has one long-poll slot (API_THREADS=5, API_RESERVED_THREADS=4)."""
    settings = replace(settings, api_threads=5, api_reserved_threads=4)
    waiter = JobWaiter(settings.database_url, max_waiters=settings.max_waiters)
    deps = ApiDeps(settings=settings, sessions=sessions, dispatcher=Dispatcher(settings.redis_url),
                   waiter=waiter)
    yield create_app(settings, deps=deps).test_client(), waiter
    waiter.close()


def test_the_settings_leave_the_reserved_threads_to_other_requests(settings):
    assert settings.max_waiters == settings.api_threads - settings.api_reserved_threads == 304


def test_a_waiter_beyond_the_slots_gets_429_with_retry_after(one_slot):
    client, waiter = one_slot
    job_id = client.post("/api/jobs", json={"cmd": ["true"]}).json["job_id"]
    # Given the one slot taken by a request waiting on some job
    with waiter.watch("another-job"):
        # When another client long-polls
        refused = client.get(f"/api/jobs/{job_id}?wait=30")
        # Then it is told, at once, to come back later, in the API's error shape
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == str(RETRY_AFTER_S)
        assert refused.json["code"] == 429 and "ask again" in refused.json["message"]
        # And a request that does not wait is served as ever, as is a submit
        assert client.get(f"/api/jobs/{job_id}").status_code == 200
        assert client.post("/api/jobs", json={"cmd": ["true"]}).status_code == 201
    # Once the slot is free, the same long-poll is served (the job is QUEUED: it answers at its timeout)
    answered = client.get(f"/api/jobs/{job_id}?wait=0.2")
    assert answered.status_code == 200 and answered.json["state"] == "QUEUED"


def test_a_refused_waiter_leaves_no_slot_taken(settings):
    waiter = JobWaiter(settings.database_url, max_waiters=2)
    try:
        with waiter.watch("a"), waiter.watch("b"):
            for _ in range(3):
                with pytest.raises(TooManyWaiters), waiter.watch("c"):
                    pass
            assert waiter.waiting == 2
        assert waiter.waiting == 0 and not waiter.watchers
    finally:
        waiter.close()
