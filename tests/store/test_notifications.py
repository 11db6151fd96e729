"""The job-end listener (what wakes GET /api/jobs/<id>?wait=S): real Postgres, no processes."""

from __future__ import annotations

import pytest

from overlay.errors import StorageUnavailable
from overlay.model import JobSpec
from overlay.states import JobState
from overlay.store import jobs as store
from overlay.store.notifications import JobEndListener


def test_the_listener_hears_jobs_that_end_and_only_those(sessions, database_url):
    with JobEndListener(database_url) as ends:
        # Given two jobs submitted while listening
        with sessions.begin() as s:
            store.insert_job(s, JobSpec(job_id="stays", cmd=("true",)))
            store.insert_job(s, JobSpec(job_id="ends", cmd=("true",)))
        # When one of them is cancelled
        with sessions.begin() as s:
            store.transition(s, "ends", JobState.CANCELLED, reason="test")
        # Then the listener names the ended job alone (submits are events too, but no end)
        heard: list[str] = []
        for _ in range(20):
            heard += ends.wait(0.2)
            if heard:
                break
        assert heard == ["ends"]


def test_a_listener_that_cannot_reach_postgres_says_so_as_storage_unavailable():
    with pytest.raises(StorageUnavailable, match="cannot listen"), \
            JobEndListener("postgresql://nobody@127.0.0.1:1/none"):
        pass
