"""Celery tasks: thin, like views. Ids in, call the core, persist, send the next message."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime

from workers import agent, scheduler
from workers.app import app

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


# When this process's latest scheduling pass began (time.time()), and how much clock
# difference between the hosts that ask for passes and this one is tolerated.
last_pass_began = 0.0
CLOCK_SLACK_S = 1.0


@app.task(name="overlay.schedule")
def schedule(sent_at: float | None = None) -> int:
    """Place what fits of the queue and dispatch it to the nodes.

    Every submit and every job end asks for a pass. A request sent before the latest
    pass of this process began is already answered: that pass read everything the
    sender had committed. So it is skipped; under load that turns thousands of
    passes over a deep queue into a few. (Clocks further apart than CLOCK_SLACK_S
    could skip one that was needed: reconcile's own pass, every tick, makes up for it.)
    """
    global last_pass_began
    if sent_at is not None and sent_at < last_pass_began - CLOCK_SLACK_S:
        return 0
    last_pass_began = time.time()
    rt = app.runtime
    dispatches = scheduler.schedule_pass(rt.sessions, rt.settings, now=utcnow())
    send_run_jobs(dispatches)
    return len(dispatches)


def request_pass() -> None:
    """Ask for a scheduling pass (after a commit that may let a job fit)."""
    schedule.delay(sent_at=time.time())


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
    request_pass()  # its GPUs are free: whatever waits may fit now
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
    for d in dispatches:
        # argsrepr is what Flower's task list and `celery events` show: which job, which attempt.
        run_job.apply_async((d.job_id, d.attempt), queue=f"assign:{d.node}",
                            argsrepr=f"job_id={d.job_id!r}, attempt={d.attempt}")
