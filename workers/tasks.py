"""Celery tasks: thin, like views. Ids in, call the core, persist, send the next message."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TypeVar

from celery.exceptions import Reject
from kombu import Producer

from workers import execution, housekeeping, scheduler, supervision
from workers import heartbeat as node_heartbeat
from workers.app import app
from workers.queues import (
    CANCEL_TASK,
    HEARTBEAT_TASK,
    PREEMPT_TASK,
    RECONCILE_TASK,
    RUN_JOB_TASK,
    SCHEDULE_TASK,
    assign_queue,
)
from workers.queues import request_pass as _request_pass

log = logging.getLogger(__name__)
M = TypeVar("M")


@app.task(name=SCHEDULE_TASK)
def schedule() -> int:
    """Place what fits of the queue and dispatch it to the nodes.

    Requests are coalesced (workers/queues.py): the flag is cleared before the pass
    reads the queue, so whatever was committed before a skipped request is seen.
    """
    rt = app.runtime
    rt.pass_requests.begin()
    try:
        result = scheduler.schedule_pass(rt.sessions, rt.settings, queue=rt.queued_jobs)
    except Exception:
        # Postgres away, restarted or failed over: row versions seen before may not hold.
        rt.queued_jobs.clear()
        raise
    send_run_jobs(result.runs)
    send_preempts(result.preempts)
    return len(result.runs)


def request_pass() -> None:
    """Ask for a scheduling pass (after a commit that may let a job fit)."""
    _request_pass(app, app.runtime.pass_requests)


@app.task(name=RECONCILE_TASK)
def reconcile() -> int:
    """Beat's tick: expire silent nodes, retry their jobs, re-send lost messages, schedule."""
    rt = app.runtime
    send_run_jobs(lost_messages(scheduler.reconcile(rt.sessions, rt.settings)))
    return schedule()


@app.task(name=housekeeping.HOUSEKEEPING_TASK)
def housekeep() -> int:
    """Beat's tick: fold the job counters, delete one batch of jobs past RETENTION_DAYS."""
    rt = app.runtime
    return len(housekeeping.housekeeping(rt.sessions, rt.settings).deleted)


@app.task(name=RUN_JOB_TASK)
def run_job(job_id: str, attempt: int, part: int = 0) -> str | None:
    """Run one attempt of a job (one ``part`` of a gang job) on this agent's node (a stale
    message does nothing)."""
    if app.runtime.agent.stopping:
        raise Reject("agent stopping", requeue=True)  # the next agent process takes it
    outcome = execution.execute(app.runtime, job_id, attempt, part=part)
    if outcome is None:
        return "ignored: stale or repeated message"
    after = execution.after_end(app.runtime, job_id, attempt, part=part)
    stop_parts(job_id, attempt, after.stop, after.why)
    if after.jobs_waiting:  # its GPUs and slot are free: what waits may fit now
        request_pass()
    return outcome.reason or "exit 0"


@app.task(name=CANCEL_TASK)
def cancel(job_id: str, attempt: int, reason: str = "job is CANCELLED") -> bool:
    """The API cancelled a job of this node, or another part of a gang job ended it: its
    supervisor kills it (no-op if not here)."""
    return supervision.cancel(app.runtime, job_id, attempt, reason)


@app.task(name=PREEMPT_TASK)
def preempt(job_id: str, attempt: int, reason: str, grace_s: float) -> bool:
    """A pass preempted a job of this node: its supervisor sends SIGTERM, waits ``grace_s``
    for it to checkpoint and exit, then kills it (no-op if not here)."""
    return supervision.preempt(app.runtime, job_id, attempt, reason, grace_s=grace_s)


@app.task(name=HEARTBEAT_TASK)
def heartbeat() -> None:
    """Beat's broadcast: every agent samples its GPUs and says it is alive."""
    rt = app.runtime
    if rt.is_agent and node_heartbeat.due(rt) and node_heartbeat.beat(rt).requeued:
        request_pass()


def lost_messages(stale: list[scheduler.RunJobMessage]) -> list[scheduler.RunJobMessage]:
    """Of the PLACED jobs not started in time, those whose run_job was lost (Redis was
    wiped or restarted): their node's queue is empty, so no message is left to take.

    While the queue still holds messages the agent is busy and will come to the job's
    own in turn; re-sending then would pile a duplicate on it at every tick.
    """
    if not stale:
        return []
    with app.pool.acquire(block=True) as conn:
        client = conn.default_channel.client
        waiting = {node: client.llen(assign_queue(node)) for node in {m.node for m in stale}}
    lost = [m for m in stale if waiting[m.node] == 0]
    if lost:
        log.warning("re-sending run_job for %d job(s) whose message was lost: %s", len(lost),
                    ", ".join(m.job_id for m in lost[:10]))
    return lost


def stop_parts(job_id: str, attempt: int, nodes: list[str], reason: str) -> None:
    """A gang job ended with a part failed or cancelled: its other parts' agents stop theirs
    now (their heartbeat check would, a beat later)."""
    publish(nodes, lambda node, producer: cancel.apply_async(
        (job_id, attempt, reason), queue=assign_queue(node), producer=producer))
    if nodes:
        log.info("job %s: stopping its parts on %s", job_id, ", ".join(nodes))


def send_run_jobs(messages: Iterable[scheduler.RunJobMessage]) -> None:
    """A pass's run_job messages, each to its node's queue."""
    def send(m: scheduler.RunJobMessage, producer: Producer) -> None:
        # argsrepr is what Flower's task list and `celery events` show: which job, which attempt.
        # A gang job's part goes as a third argument; a one-node job's message is as it always was.
        args: tuple[str | int, ...] = (m.job_id, m.attempt)
        shown = f"job_id={m.job_id!r}, attempt={m.attempt}"
        if m.part:
            args, shown = (*args, m.part), f"{shown}, part={m.part}"
        run_job.apply_async(args, queue=assign_queue(m.node), producer=producer, argsrepr=shown)

    publish(list(messages), send)


def send_preempts(messages: Iterable[scheduler.PreemptMessage]) -> None:
    """Each to its victim's node; a lost one is made up by that agent's heartbeat check."""
    publish(list(messages), lambda m, producer: preempt.apply_async(
        (m.job_id, m.attempt, m.reason, m.grace_s), queue=assign_queue(m.node), producer=producer,
        argsrepr=f"job_id={m.job_id!r}, attempt={m.attempt}"))


def publish(messages: list[M], send: Callable[[M, Producer], object]) -> None:
    """``send`` each message on one broker connection, written to Redis in pipelined batches
    (kombu's ``Producer.batch``): a third of the cost of a round trip each.

    A batch is written once, without Celery's publish retries; if that fails (Redis away a
    moment), every message is sent again one by one, with them. Each task here does nothing
    on a second delivery, so the messages a failed batch had already written do no harm."""
    if not messages:
        return
    try:
        with app.producer_or_acquire() as producer, producer.batch():
            for m in messages:
                send(m, producer)
    except Exception as e:  # whatever failed, the one-by-one sends meet it again, with retries
        log.warning("sending %d message(s) in one batch failed (%s: %s): sending them one by one",
                    len(messages), type(e).__name__, e)
        with app.producer_or_acquire() as producer:
            for m in messages:
                send(m, producer)
