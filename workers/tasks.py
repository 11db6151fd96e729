"""Celery tasks: thin, like views. Ids in, call the core, persist, send the next message."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime

from workers import agent, scheduler
from workers.app import app

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


@app.task(name="overlay.schedule")
def schedule() -> int:
    """Place what fits of the queue and dispatch it to the nodes.

    Requests are coalesced (workers/coalesce.py): the flag is cleared before the pass
    reads the queue, so whatever was committed before a skipped request is seen.
    """
    rt = app.runtime
    rt.pass_requests.begin()
    dispatches = scheduler.schedule_pass(rt.sessions, rt.settings, now=utcnow())
    send_run_jobs(dispatches)
    return len(dispatches)


def request_pass() -> None:
    """Ask for a scheduling pass (after a commit that may let a job fit)."""
    if app.runtime.pass_requests.want():
        schedule.delay()


@app.task(name="overlay.reconcile")
def reconcile() -> int:
    """Beat's tick: expire silent nodes, retry their jobs, re-send lost messages, schedule."""
    rt = app.runtime
    send_run_jobs(lost_messages(scheduler.reconcile(rt.sessions, rt.settings, now=utcnow())))
    return schedule()


@app.task(name="overlay.run_job")
def run_job(job_id: str, attempt: int) -> str | None:
    """Run one attempt of a job on this agent's node (a stale message does nothing)."""
    outcome = agent.execute(app.runtime, job_id, attempt, clock=utcnow)
    if outcome is None:
        return "ignored: stale or repeated message"
    if agent.jobs_waiting(app.runtime):  # its GPUs and slot are free: what waits may fit now
        request_pass()
    return outcome.reason or "exit 0"


@app.task(name="overlay.heartbeat")
def heartbeat() -> None:
    """Beat's broadcast: every agent samples its GPUs and says it is alive."""
    rt = app.runtime
    if rt.is_agent:
        agent.heartbeat(rt, now=utcnow())


def lost_messages(stale: list[scheduler.Dispatch]) -> list[scheduler.Dispatch]:
    """Of the PLACED jobs not started in time, those whose run_job was lost (Redis was
    wiped or restarted): their node's queue is empty, so no message is left to take.

    While the queue still holds messages the agent is busy and will come to the job's
    own in turn; re-sending then would pile a duplicate on it at every tick.
    """
    if not stale:
        return []
    with app.pool.acquire(block=True) as conn:
        client = conn.default_channel.client
        waiting = {node: client.llen(f"assign:{node}") for node in {d.node for d in stale}}
    lost = [d for d in stale if waiting[d.node] == 0]
    if lost:
        log.warning("re-sending run_job for %d job(s) whose message was lost: %s", len(lost),
                    ", ".join(d.job_id for d in lost[:10]))
    return lost


def send_run_jobs(dispatches: Iterable[scheduler.Dispatch]) -> None:
    dispatches = list(dispatches)
    if not dispatches:
        return
    with app.producer_or_acquire() as producer:  # one broker connection for the whole batch
        for d in dispatches:
            # argsrepr is what Flower's task list and `celery events` show: which job, which attempt.
            run_job.apply_async((d.job_id, d.attempt), queue=f"assign:{d.node}", producer=producer,
                                argsrepr=f"job_id={d.job_id!r}, attempt={d.attempt}")
