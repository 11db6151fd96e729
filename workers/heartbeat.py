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
from overlay.store import jobs as job_store
from overlay.store import nodes as node_store
from workers import orphans
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


def kill_leftovers(rt: Runtime) -> None:
    """Before taking work: kill the job processes a previous agent process of this node
    left running (it was SIGKILLed; its attempts are retried or failed elsewhere)."""
    orphans.kill_leftovers(orphans.running_dir(rt.settings.log_dir, rt.settings.node_name))


def due(rt: Runtime) -> bool:
    """Whether a heartbeat request should beat now: not when one went through less than
    half an interval ago (requests that piled up while the agent was busy or frozen).

    Measured on this process's monotonic clock, so a wrong wall clock changes nothing.
    """
    last = rt.agent.last_heartbeat_mono
    return last is None or time.monotonic() - last >= rt.settings.heartbeat_interval_s / 2


def beat(rt: Runtime, *, now: datetime | None = None) -> Beat:
    """Sample the GPUs and record the node as alive; remember how it went for /health.

    The first beat that reaches Postgres also settles the attempts a previous agent
    process of this node left (``recover_lost_attempts``).
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
    requeued = False if rt.agent.recovered else recover_lost_attempts(rt, now=now)
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
        "pid": os.getpid(),
        "version": __version__,
    }


def recover_lost_attempts(rt: Runtime, *, now: datetime | None = None) -> bool:
    """Retry or fail the jobs Postgres says run on this node but no process here runs;
    whether any went back to the queue.

    They belonged to a previous agent process that died (its processes were killed by
    kill_leftovers). If it came back before NODE_TTL_S, reconcile never saw the node go
    silent, and without this they would stay RUNNING for ever. Attempts this process
    has claimed are left alone (a run_job may be starting right now).
    """
    requeued = False
    with rt.sessions.begin() as s:
        for job in job_store.running_on(s, rt.settings.node_name):
            if rt.agent.runs(job.job_id, job.attempt):
                continue
            decision = decide_retry(job, cause=AGENT_RESTARTED)
            log.warning("job %s: %s", job.job_id, decision.reason, extra=job_fields(
                job.job_id, rt.settings.node_name, state=decision.target.value, attempt=job.attempt))
            job_store.transition(s, job.job_id, decision.target, now=now, reason=decision.reason,
                                 attempt=job.attempt)
            requeued |= decision.target is JobState.QUEUED
    rt.agent.recovered = True
    return requeued
