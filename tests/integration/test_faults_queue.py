"""Faults between Postgres and the agents, done for real: Redis wiped or restarted under
queued, placed and running jobs, and a scheduler SIGKILLed in the middle of its pass.

Each test runs its own redis-server, so it can kill and restart it; the rest is as in
test_faults.py (real gunicorn, scheduler, beat and agents, NODE_TTL_S=4 unless said).
docs/reliability.md lists which promise each test proves.
"""

from __future__ import annotations

import os
import signal

import pytest
from sqlalchemy import create_engine, text

from tests.integration.harness import (
    RESEND_S,
    TERMINAL,
    PrivateRedis,
    Stack,
    allocations,
    assert_no_gpu_double_booked,
    job,
    run_count,
    submit,
    wait_state,
    wait_until,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def private_redis(tmp_path) -> PrivateRedis:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.mark.parametrize("fault", ["FLUSHDB", "restart"])
def test_jobs_queued_and_placed_when_redis_is_wiped_or_restarted_all_end_and_run_once(
    fault, database_url, sessions, tmp_path, private_redis
):
    # Given node-a with jobs running, others placed with their run_job messages waiting
    # in assign:node-a, and more queued: the agent is frozen (SIGSTOP) after the first
    # jobs start, so the messages for the next ones wait in Redis, and its job slots
    # (7) and GPUs (4) leave the rest QUEUED. NODE_TTL_S is long enough that the frozen
    # agent is not declared dead meanwhile.
    stack = Stack(database_url=database_url, redis_url=private_redis.url, workdir=tmp_path,
                  NODE_TTL_S="20")
    broker = private_redis.client()
    try:
        stack.start_cluster(agents=("node-a",))
        first = [f"cpu-{i}" for i in range(3)]
        later = [f"gpu-{i}" for i in range(6)] + [f"cpu-{i}" for i in range(3, 6)]
        ids = first + later
        for job_id in first:
            submit(stack, job_id=job_id, cmd=["sleep", "3"])
        wait_until(lambda: all(job(stack, j)["state"] == "RUNNING" for j in first), timeout=10,
                   what="the first jobs running")
        os.killpg(stack.procs["node-a"].pid, signal.SIGSTOP)  # its jobs have sessions of their own
        for job_id in later:
            submit(stack, job_id=job_id, gpus=1 if job_id.startswith("gpu") else 0, cmd=["sleep", "3"])
        # (the frozen agent's pending BRPOP may take one message into its socket)
        wait_until(lambda: broker.llen("assign:node-a") >= 3, timeout=10, what="run_job messages waiting")
        states = {j: job(stack, j)["state"] for j in ids}
        assert {"QUEUED", "PLACED", "RUNNING"} <= set(states.values()), states

        # When Redis loses everything it held
        if fault == "FLUSHDB":
            broker.flushdb()
        else:
            private_redis.kill()
            private_redis.start()
        assert broker.llen("assign:node-a") == 0
        os.killpg(stack.procs["node-a"].pid, signal.SIGCONT)

        # Then every job still ends DONE, each run exactly once, from what Postgres says
        for job_id in ids:
            assert wait_state(stack, job_id, TERMINAL, timeout=RESEND_S + 45)["state"] == "DONE"
        assert {j: run_count(sessions, j) for j in ids} == dict.fromkeys(ids, 1)
        # and the API still dispatches new work through the new Redis
        submit(stack, job_id="after", cmd=["true"])
        assert wait_state(stack, "after", TERMINAL)["state"] == "DONE"
    finally:
        broker.close()
        stack.stop_all()
        print(stack.all_output()[-20000:])


def lock_waiters(engine) -> int:
    """Postgres backends waiting for a lock. A SIGKILLed scheduler's backend stays among
    them while the lock it waits for is held: Postgres notices the dead client only later."""
    with engine.connect() as conn:
        return int(conn.scalar(text("select count(distinct pid) from pg_locks where not granted")) or 0)


def test_a_scheduler_killed_mid_pass_double_books_nothing_and_leaves_nothing_placed(
    database_url, sessions, tmp_path, private_redis
):
    # Given 8 one-GPU jobs queued for 6 GPUs, and the row of one of them locked by the
    # test, so that the scheduler's pass stops half-way through, inside its transaction
    stack = Stack(database_url=database_url, redis_url=private_redis.url, workdir=tmp_path)
    engine = create_engine(database_url)
    try:
        stack.start_cluster()
        stack.kill("scheduler")
        ids = [f"j{i}" for i in range(8)]
        for job_id in ids:
            submit(stack, job_id=job_id, gpus=1, cmd=["sleep", "1"])
        blocker = engine.connect()
        blocker.begin()
        blocker.execute(text("select 1 from jobs where job_id = 'j3' for update"))
        restart_scheduler(stack)
        wait_until(lambda: lock_waiters(engine) >= 1, timeout=15, what="the pass to block on j3")

        # When the scheduler is SIGKILLed there, with j0..j2 placed but not committed
        stack.kill("scheduler")
        # Then nothing of its pass remains: no job PLACED, no GPU held
        assert {job(stack, j)["state"] for j in ids} == {"QUEUED"}
        assert allocations(sessions, "node-a") + allocations(sessions, "node-b") == []

        # When the next scheduler commits its placements and is SIGKILLed before it can
        # send a single run_job (Redis is down meanwhile)
        waiters = lock_waiters(engine)  # the dead scheduler's backend may still wait on j3
        restart_scheduler(stack)
        wait_until(lambda: lock_waiters(engine) > waiters, timeout=15,
                   what="the new scheduler's pass to block on j3")
        private_redis.kill()
        blocker.rollback()
        blocker.close()
        wait_until(lambda: sum(job(stack, j)["state"] == "PLACED" for j in ids) == 6, timeout=15,
                   what="six jobs PLACED")
        stack.kill("scheduler")
        private_redis.start()

        # Then once a scheduler is back, reconcile re-sends what Postgres says is placed:
        # every job ends DONE, none stays PLACED, no GPU was ever held by two jobs
        restart_scheduler(stack)
        for job_id in ids:
            assert wait_state(stack, job_id, TERMINAL, timeout=RESEND_S + 40)["state"] == "DONE"
        assert_no_gpu_double_booked(sessions, ids)
        assert {j: run_count(sessions, j) for j in ids} == dict.fromkeys(ids, 1)
        assert "re-sending run_job for 6 job(s)" in stack.output("scheduler")
    finally:
        stack.stop_all()
        engine.dispose()
        print(stack.all_output()[-20000:])


def restart_scheduler(stack: Stack) -> None:
    stack.set_aside_log("scheduler")
    stack.start_scheduler()
