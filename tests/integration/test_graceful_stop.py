"""Graceful stop of the control plane: SIGTERM to the API finishes the requests in flight,
SIGTERM to the scheduler finishes its pass, SIGTERM to beat loses no tick that matters.

Real processes under a stream of submits, as `systemctl stop`, `docker stop` or a
supervisor's stop button would send it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from typing import Any

import pytest
import redis
import requests
from sqlalchemy import text

from overlay.store import cluster_state
from tests.integration.harness import Stack, submit, wait_until

pytestmark = pytest.mark.slow


def submit_stream(api: str, prefix: str, stop: threading.Event, outcomes: list[tuple[str, Any]]) -> None:
    """Submit jobs one after another until ``stop``; record (job_id, status code or error name)."""
    n = 0
    while not stop.is_set():
        job_id = f"{prefix}-{n}"
        n += 1
        try:
            # A new connection per request: a refused connection is then unambiguous (not accepted).
            response = requests.post(f"{api}/api/jobs", json={"job_id": job_id, "cmd": ["true"]},
                                     headers={"Connection": "close"}, timeout=30)
            outcomes.append((job_id, response.status_code))
        except requests.ConnectionError as e:
            # refused: the listener is closed; reset: the connection sat in the kernel's
            # backlog and the API had not accepted it when it closed its listener
            outcomes.append((job_id, "refused" if "refused" in str(e).lower() else "reset"))
            time.sleep(0.05)


def stored_ids(sessions) -> set[str]:
    with sessions() as s:
        return set(s.execute(text("select job_id from jobs")).scalars())


def test_sigterm_to_the_api_answers_every_submit_in_flight_and_drops_none(stack: Stack, sessions):
    # Given the API under a stream of submits from 8 clients
    stack.start_api()
    stop, outcomes = threading.Event(), []
    clients = [threading.Thread(target=submit_stream, args=(stack.api, f"c{i}", stop, outcomes))
               for i in range(8)]
    for c in clients:
        c.start()
    wait_until(lambda: len(outcomes) >= 200, timeout=60, what="200 submits")
    # When its master gets SIGTERM, as systemd or docker stop send it
    stack.procs["api"].send_signal(signal.SIGTERM)
    stack.procs["api"].wait(timeout=60)
    stop.set()
    for c in clients:
        c.join(30)
    # Then no submit got a 5xx: each got its 201, or never reached the API (refused, or reset
    # in the kernel's backlog before the API accepted it)
    codes = Counter(code for _, code in outcomes)
    assert set(codes) <= {201, "refused", "reset"}, codes
    assert codes[201] >= 200
    # and exactly the submits answered 201 are stored: none in flight was dropped half-done,
    # so a client may send again what was refused or reset (with its job_id, a 409 if it landed)
    created = {job_id for job_id, code in outcomes if code == 201}
    assert stored_ids(sessions) == created
    assert stack.procs["api"].returncode == 0


def test_sigterm_to_the_scheduler_finishes_its_pass_and_sends_every_run_job(stack: Stack, sessions,
                                                                           redis_url):
    # Given a scheduler, two registered nodes whose agents are then frozen (so run_jobs stay
    # in Redis where the test counts them; a long TTL keeps them placeable), and queued jobs
    stack.env.update(NODE_TTL_S="120", FENCE_S="60")
    stack.start_api()
    stack.start_scheduler()
    for node in ("node-a", "node-b"):
        stack.start_agent(node)
        os.killpg(stack.procs[node].pid, signal.SIGSTOP)
    try:
        for i in range(4):
            submit(stack, job_id=f"j{i}", cmd=["true"], gpus=1)
        wait_until(lambda: placed_jobs(sessions), timeout=30, what="a first pass")
        # and a pass begun and held: the test holds the one-pass-at-a-time lock the pass waits for
        with sessions.begin() as s:
            cluster_state.hold_scheduler_lock(s)
            submit(stack, job_id="blocker", cmd=["true"], gpus=1)
            submit(stack, job_id="late", cmd=["true"], gpus=1)
            wait_until(lambda: waiting_backends(sessions) > 0, timeout=30, what="a pass to block")
            # When the scheduler gets SIGTERM while its pass waits
            stack.procs["scheduler"].send_signal(signal.SIGTERM)
            time.sleep(1)
            assert stack.procs["scheduler"].poll() is None, "the scheduler left in the middle of a pass"
        # Then, once the lock is gone, the pass finishes and the scheduler exits cleanly
        stack.procs["scheduler"].wait(timeout=60)
        assert stack.procs["scheduler"].returncode == 0, stack.output("scheduler")
        # and every job it placed has its run_job waiting in its node's queue
        placed = placed_jobs(sessions)
        assert {"blocker", "late"} <= set(placed), placed
        broker = redis.Redis.from_url(redis_url)
        in_queues = sum(broker.llen(f"assign:{node}") for node in ("node-a", "node-b"))
        assert in_queues == len(placed), (in_queues, placed)
    finally:
        for node in ("node-a", "node-b"):
            os.killpg(stack.procs[node].pid, signal.SIGCONT)


def placed_jobs(sessions) -> dict[str, str]:
    with sessions() as s:
        return dict(s.execute(text("select job_id, node from jobs where status = 'PLACED'")).all())


def waiting_backends(sessions) -> int:
    with sessions() as s:
        return int(s.execute(text(
            "select count(*) from pg_locks l join pg_stat_activity a on a.pid = l.pid "
            "where not l.granted and a.datname = current_database()")).scalar_one())


def test_sigterm_to_beat_loses_no_reconcile_tick_that_matters(stack: Stack, sessions):
    # Given beat driving reconcile, and a scheduler running it
    stack.start_api()
    stack.start_scheduler()
    stack.start_beat()

    def last_tick():
        with sessions() as s:
            return cluster_state.reconcile_state(s)[0]

    first = wait_until(last_tick, timeout=30, what="a first reconcile tick")
    # When beat gets SIGTERM
    stack.procs["beat"].send_signal(signal.SIGTERM)
    stack.procs["beat"].wait(timeout=30)
    # Then it exits cleanly
    assert stack.procs["beat"].returncode == 0, stack.output("beat")
    stopped_at = last_tick()
    assert stopped_at >= first
    # and when it starts again, reconcile runs again at once (no tick waits for a whole period)
    stack.set_aside_log("beat")
    started = time.monotonic()
    stack.start_beat()
    wait_until(lambda: last_tick() > stopped_at, timeout=15, what="reconcile again after a restart")
    assert time.monotonic() - started < 15
