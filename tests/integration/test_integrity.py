"""Submit is idempotent on job_id under real concurrency: gunicorn with two workers of 16 threads."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
import requests
from sqlalchemy import text

pytestmark = pytest.mark.slow


def test_twenty_concurrent_submits_of_one_job_id_give_one_201_and_nineteen_409s(stack, sessions):
    stack.start_cluster(agents=(), beat=False)
    for round_ in range(3):
        job_id = f"same-{round_}"
        statuses = submit_at_once(stack.api, {"job_id": job_id, "cmd": ["true"]}, clients=20)
        assert Counter(statuses) == {201: 1, 409: 19}
        with sessions() as s:
            assert s.scalar(text("select count(*) from jobs where job_id = :j"), {"j": job_id}) == 1
            assert s.scalar(text("select count(*) from job_events where job_id = :j"), {"j": job_id}) == 1


def submit_at_once(api: str, body: dict, *, clients: int) -> list[int]:
    """``clients`` threads, each with its own connection, POST ``body`` at the same moment."""
    barrier = threading.Barrier(clients)
    statuses: list[int] = []

    def submit() -> None:
        session = requests.Session()
        barrier.wait()
        statuses.append(session.post(f"{api}/api/jobs", json=body, timeout=30).status_code)

    threads = [threading.Thread(target=submit) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return statuses
