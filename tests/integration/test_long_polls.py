"""Long-polls against real gunicorn: waiting clients never take the threads a submit needs.

The API runs as deployed (deploy/gunicorn.conf.py, a gthread worker) with few threads
(API_THREADS=12, API_RESERVED_THREADS=4: 8 long-poll slots) and no scheduler, so a job
stays QUEUED and its waiters wait until it is cancelled. One worker: with two, the kernel
may hand every probe to the full one while the other still has a slot free, and "every
slot is taken" could not be observed from outside.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.integration.harness import BIN, ROOT, Stack, submit, wait_until

pytestmark = pytest.mark.slow

SLOTS = 8  # 12 - 4
OVERLAY = str(BIN / "overlay")


@pytest.fixture
def api(stack: Stack) -> Stack:
    stack.env.update(API_THREADS="12", API_RESERVED_THREADS="4", LOG_LEVEL="DEBUG")  # DEBUG: access log
    stack.start("api", [str(BIN / "gunicorn"), "-c", "deploy/gunicorn.conf.py", "--bind",
                        f"127.0.0.1:{stack.api_port}", "--workers", "1", "web.app:create_app()"])
    stack.wait_api()
    return stack


class Waiters:
    """``n`` clients long-polling one job; a refused one (429) asks again after Retry-After on
    a new connection, as the CLI does (with several workers, a kept-alive connection would
    ask the same full one for ever), so every slot ends up taken."""

    def __init__(self, api: str, job_id: str, n: int) -> None:
        self.url = f"{api}/api/jobs/{job_id}"
        self.answers: list[dict] = []
        self.refusals = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.wait, daemon=True) for _ in range(n)]
        for t in self.threads:
            t.start()

    def wait(self) -> None:
        session = requests.Session()
        while True:
            response = session.get(self.url, params={"wait": 120}, timeout=150)
            if response.status_code != 429:
                with self.lock:
                    self.answers.append(response.json())
                return
            with self.lock:
                self.refusals += 1
            session.close()
            threading.Event().wait(float(response.headers["Retry-After"]) / 10)

    def join(self) -> None:
        for t in self.threads:
            t.join(60)
            assert not t.is_alive(), "a waiter was never answered"


def all_slots_taken(api: str, job_id: str) -> bool:
    """Whether a long-poll is refused now."""
    return requests.get(f"{api}/api/jobs/{job_id}", params={"wait": 0.1}, timeout=10).status_code == 429


@pytest.fixture
def full(api: Stack) -> Iterator[tuple[Stack, str, Waiters]]:
    """Every long-poll slot taken by more waiters than slots, on a job that stays QUEUED."""
    job_id = submit(api, cmd=["true"])["job_id"]
    waiters = Waiters(api.api, job_id, SLOTS + 8)
    wait_until(lambda: all_slots_taken(api.api, job_id), timeout=60, what="every long-poll slot taken")
    yield api, job_id, waiters
    requests.post(f"{api.api}/api/jobs/{job_id}/cancel", timeout=10)
    waiters.join()


def refused_in_access_log(api: Stack, path: str) -> bool:
    return any(path in line and " 429 " in line for line in api.output("api").splitlines())


def test_with_every_long_poll_slot_taken_a_submit_still_answers(full):
    api, job_id, waiters = full
    # When a client submits while more clients wait than there are slots
    response = requests.post(f"{api.api}/api/jobs", json={"cmd": ["true"]}, timeout=10)
    # Then the submit is served by a reserved thread (with 16 threads and no cap it hung until
    # the waiters' timeouts), and so is a plain read
    assert response.status_code == 201
    assert requests.get(f"{api.api}/api/jobs/{job_id}", timeout=10).json()["state"] == "QUEUED"
    # And a waiter beyond the slots is told when to ask again
    refused = requests.get(f"{api.api}/api/jobs/{job_id}", params={"wait": 5}, timeout=10)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    assert waiters.refusals > 0


def test_every_waiter_gets_the_job_when_it_ends(full):
    api, job_id, waiters = full
    requests.post(f"{api.api}/api/jobs/{job_id}/cancel", timeout=10)
    waiters.join()
    assert len(waiters.answers) == SLOTS + 8
    assert {a["state"] for a in waiters.answers} == {"CANCELLED"}


def test_the_cli_waits_through_429s_until_the_job_ends(full, tmp_path: Path):
    api, job_id, _ = full
    # Given every slot taken, `overlay submit --wait` submits and starts polling its job
    argv = [OVERLAY, "--api", api.api, "submit", "--job-id", "cli-busy", "--wait", "--", "true"]
    cli = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: refused_in_access_log(api, "/api/jobs/cli-busy?wait="), timeout=60,
                   what="the CLI's long-poll refused with 429")
        # Then a 429 does not end it: it still waits
        assert cli.poll() is None
        # When the slots free up (the waiters' job ends) and then its own job ends
        requests.post(f"{api.api}/api/jobs/{job_id}/cancel", timeout=10)
        requests.post(f"{api.api}/api/jobs/cli-busy/cancel", timeout=10)
        out, err = cli.communicate(timeout=60)
    finally:
        cli.kill()
    # Then it reports the end it waited for, as ever (a cancelled job: exit status 1)
    assert cli.returncode == 1, err
    assert "CANCELLED" in err + out
