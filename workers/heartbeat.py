"""The node's side of liveness: register, heartbeat, and settle what a previous agent
process of this node left behind."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from overlay import __version__
from overlay.logfmt import job_fields
from overlay.model import ProbeReport
from overlay.retry import AGENT_RESTARTED, decide_retry
from overlay.states import JobState
from overlay.store import agents as agent_store
from overlay.store import gangs
from overlay.store import jobs as job_store
from overlay.store import nodes as node_store
from workers import supervision
from workers.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Beat:
    """How one heartbeat went: what the GPUs said, and whether jobs went back to the
    queue (then the caller asks for a scheduling pass)."""

    report: ProbeReport
    requeued: bool = False


def job_slots(concurrency: object) -> int | None:
    """Jobs this agent can run at once: its worker threads but one.

    Each job holds a worker thread until it ends, and heartbeats are tasks on the same
    threads: with every thread on a long job no heartbeat would run and the node would
    be declared dead under its jobs. So placement never fills the last thread.
    """
    if not isinstance(concurrency, int) or concurrency <= 0:
        return None  # unknown (e.g. "auto", resolved later): no limit, as before
    if concurrency < 2:
        log.warning("agent runs with -c %s: a running job delays its heartbeats; use -c 2 or more",
                    concurrency)
        return 1
    return concurrency - 1


def due(rt: Runtime) -> bool:
    """Whether a heartbeat request should beat now: not when one went through less than
    half an interval ago (requests that piled up while the agent was busy or frozen).

    Measured on this process's monotonic clock, so a wrong wall clock changes nothing.
    """
    last = rt.agent.last_heartbeat_mono
    return last is None or time.monotonic() - last >= rt.settings.heartbeat_interval_s / 2


def beat(rt: Runtime, *, now: datetime | None = None) -> Beat:
    """Sample the GPUs and record the node as alive; remember how it went for /health.

    Every beat that reaches Postgres also checks the node's RUNNING rows against the
    attempts this process watches (``check_attempts``).
    """
    try:
        report = rt.probe.sample(rt.agent.busy_now())
        with rt.sessions.begin() as s:
            node_store.record_heartbeat(
                s, name=rt.settings.node_name, hostname=rt.hostname,
                labels=node_labels(rt.settings.node_labels, report), report=report,
                agent_health=agent_health(rt, report), now=now,
            )
    except Exception as e:
        rt.agent.last_heartbeat_error = f"{type(e).__name__}: {e}"
        raise
    rt.agent.last_heartbeat_at, rt.agent.last_heartbeat_error = time.time(), None
    rt.agent.last_heartbeat_mono = time.monotonic()
    if rt.agent.stopping:  # SIGTERM came while this beat was writing: say it again, after it
        with rt.sessions.begin() as s:
            agent_store.mark_stopping(s, rt.settings.node_name)
    requeued = check_attempts(rt, now=now)
    return Beat(report=report, requeued=requeued)


def node_labels(configured: dict[str, str], report: ProbeReport) -> dict[str, str]:
    """NODE_LABELS plus what the GPUs say: model, memory, compute capability, count."""
    labels: dict[str, str] = {"gpu.count": str(len(report.gpus))}
    if report.gpus:
        first = report.gpus[0]
        labels["gpu.model"] = first.name
        labels["gpu.memory_mb"] = str(first.memory_total_mb)
        if first.compute_capability:
            labels["gpu.compute_capability"] = first.compute_capability
    return {**labels, **configured}


def agent_health(rt: Runtime, report: ProbeReport) -> dict[str, Any]:
    """What /api/nodes shows of the agent itself."""
    return {
        "job_slots": rt.agent.job_slots,
        "metrics_mode": report.mode,
        "fallback_reason": getattr(rt.probe, "fallback_reason", None),
        "driver_version": report.driver_version,
        "cuda_version": report.cuda_version,
        "probe_errors": list(report.errors),
        "running_jobs": len(set(rt.agent.busy_now().values())),
        "executor": rt.settings.executor,
        "containment": rt.agent.containment,
        "gpu_isolation": rt.agent.gpu_isolation,
        # A beat of an agent that got SIGTERM keeps the node out of placement.
        "stopping": rt.agent.stopping,
        # A gang job's MASTER_ADDR when its rank 0 runs here (overlay/store/jobs.py place).
        "address": rt.address,
        "pid": os.getpid(),
        "version": __version__,
    }


def check_attempts(rt: Runtime, *, now: datetime | None = None) -> bool:
    """Hold the node's RUNNING rows against its supervisors; whether a job went back to the queue.

    A RUNNING row with no attempt here (no thread watches it and no supervisor's
    directory holds it: the agent process that started it died before its supervisor
    existed) is retried or failed, ``agent restarted``. An attempt watched here whose
    job is no longer RUNNING for it (cancelled, or given to another attempt) is stopped:
    this confirms cancel messages, and stops an attempt whose message was lost.
    """
    requeued = False
    node = rt.settings.node_name
    with rt.sessions.begin() as s:
        for job in [*job_store.running_on(s, node), *gangs.running_parts_on(s, node)]:
            if rt.agent.runs(job.job_id, job.attempt) or supervision.attempt_dir(
                    rt, job.job_id, job.attempt).path.is_dir():
                continue
            decision = decide_retry(job, cause=AGENT_RESTARTED)
            log.warning("job %s: %s", job.job_id, decision.reason, extra=job_fields(
                job.job_id, node, state=decision.target.value, attempt=job.attempt))
            if job.spec.nodes > 1:  # the gang as one: its other parts' agents stop theirs
                gangs.give_up(s, job, decision.target, reason=decision.reason, now=now, lost=node)
            else:
                job_store.transition(s, job.job_id, decision.target, now=now, reason=decision.reason,
                                     attempt=job.attempt)
            requeued |= decision.target is JobState.QUEUED
        watched = rt.agent.claimed_now()
        current = agent_store.current_attempts(s, [job_id for job_id, _ in watched])
        preempted = agent_store.preempted_for(s, [job_id for job_id, (state, _) in current.items()
                                                  if state is JobState.QUEUED])
    for job_id, attempt in watched:
        by = preempted.get(job_id)
        if by is not None and current.get(job_id) == (JobState.QUEUED, attempt):
            # Preempted (its message may be lost): stopped with its grace time, not cancelled.
            supervision.preempt(rt, job_id, attempt, f"preempted by {by}",
                                grace_s=rt.settings.preempt_grace_s)
            continue
        why = stop_reason(current.get(job_id), attempt)
        if why is not None:
            log.info("job %s: stopping attempt %s here: %s", job_id, attempt, why,
                     extra=job_fields(job_id, node, attempt=attempt))
            supervision.cancel(rt, job_id, attempt, why)
    return requeued


def stop_reason(current: tuple[JobState, int] | None, attempt: int) -> str | None:
    """Why an attempt watched here must stop, given its job's (state, attempt) in Postgres."""
    if current is None:
        return "job was deleted"
    state, now_attempt = current
    if now_attempt != attempt:
        return "superseded by a newer attempt"
    if state in (JobState.PLACED, JobState.RUNNING):
        return None  # PLACED: its run_job is starting it right now
    return f"job is {state.value}"
