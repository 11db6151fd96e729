"""The agent's work on its node: heartbeats, and running one job attempt end to end."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from overlay import __version__
from overlay.errors import InvalidTransition, StaleAttempt
from overlay.launch import job_argv, job_env, log_path
from overlay.logfmt import job_fields
from overlay.model import Job, ProbeReport
from overlay.retry import AGENT_RESTARTED, decide_retry
from overlay.states import JobState
from overlay.store import jobs as job_store
from overlay.store import nodes as node_store
from overlay.store.tables import JobRow
from workers import orphans, runner
from workers.runtime import Runtime

log = logging.getLogger(__name__)
CANCEL_POLL_S = 0.5


def heartbeat(rt: Runtime, *, now: datetime) -> ProbeReport:
    """Sample the GPUs and record the node as alive; remember how it went for /health."""
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
    if not rt.agent.recovered:
        recover_lost_attempts(rt, now=now)
    return report


def kill_leftovers(rt: Runtime) -> None:
    """Before taking work: kill the job processes a previous agent process of this node
    left running (it was SIGKILLed; its attempts are retried or failed elsewhere)."""
    orphans.kill_leftovers(orphans.running_dir(rt.settings.log_dir, rt.settings.node_name))


def recover_lost_attempts(rt: Runtime, *, now: datetime) -> None:
    """Retry or fail the jobs Postgres says run on this node but no process here runs.

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
    if requeued:
        from workers.tasks import request_pass  # not at the top: tasks imports this module

        request_pass()


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


def agent_health(rt: Runtime, report: ProbeReport) -> dict[str, Any]:
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


def execute(
    rt: Runtime, job_id: str, attempt: int, *, clock: Callable[[], datetime]
) -> runner.Outcome | None:
    """Run one attempt of a job on this node and record its end; how it ended, or None
    if the message was stale or redelivered (then nothing happens)."""
    job = start(rt, job_id, attempt, now=clock())
    if job is None:
        return None
    try:
        return run_started(rt, job, clock=clock)
    finally:
        rt.agent.unclaim(job_id, attempt)


def run_started(rt: Runtime, job: Job, *, clock: Callable[[], datetime]) -> runner.Outcome:
    path = log_file(rt, job.job_id)
    with open(path, "a") as out:
        out.write(f"=== overlay: {job.job_id} attempt {job.attempt} on {rt.settings.node_name}, "
                  f"CUDA_VISIBLE_DEVICES={','.join(map(str, job.gpus))} ===\n")
    rt.agent.hold(job.job_id, job.gpus)
    try:
        outcome = launch(rt, job, path)
    finally:
        rt.agent.free(job.job_id)
    record_end(rt, job, outcome, path, clock=clock)
    return outcome


def start(rt: Runtime, job_id: str, attempt: int, *, now: datetime) -> Job | None:
    """PLACED -> RUNNING if this message is for the job's current attempt on this node.

    The attempt is claimed first, so that recover_lost_attempts never takes a job this
    process is starting for one a dead process left.
    """
    rt.agent.claim(job_id, attempt)
    try:
        job = _start(rt, job_id, attempt, now=now)
    except BaseException:
        rt.agent.unclaim(job_id, attempt)
        raise
    if job is None:
        rt.agent.unclaim(job_id, attempt)
    return job


def _start(rt: Runtime, job_id: str, attempt: int, *, now: datetime) -> Job | None:
    with rt.sessions.begin() as s:
        job = job_store.start(s, job_id, attempt=attempt, node=rt.settings.node_name, now=now)
    if isinstance(job, str):
        log.info("job %s: ignoring run_job for attempt %s (%s)", job_id, attempt, job,
                 extra=job_fields(job_id, rt.settings.node_name))
        return None
    log.info("job %s running on %s, GPUs %s", job_id, job.node, list(job.gpus), extra=job_fields(
        job_id, job.node, state=job.state.value, attempt=attempt, gpus=list(job.gpus)))
    return job


def jobs_waiting(rt: Runtime) -> bool:
    """Whether a job waits for placement (so that the GPUs and slot just freed may serve it)."""
    with rt.sessions() as s:
        return job_store.any_queued(s)


def launch(rt: Runtime, job: Job, path: Path) -> runner.Outcome:
    should_stop = stop_check(rt, job.job_id, job.attempt)
    if rt.settings.executor == "fake":
        return runner.fake_run(job.spec.cmd, log_path=path, should_stop=should_stop)
    argv = job_argv(job.spec)
    if job.spec.image and shutil.which(argv[0]) is None:
        reason = f"apptainer is not installed on node {rt.settings.node_name}"
        with open(path, "a") as out:
            out.write(f"overlay: {reason}\n")
        return runner.Outcome(exit_code=None, reason=reason)
    env = job_env(job.spec, job.gpus, agent_env=os.environ, attempt=job.attempt)
    user = rt.settings.job_user if os.geteuid() == 0 and rt.settings.job_user else None
    if user:
        env.update(user_env(user))
    pidfile = PidFile(orphans.running_dir(rt.settings.log_dir, rt.settings.node_name), job)
    try:
        return runner.run(argv, env, log_path=path, timeout_s=job.spec.timeout_s,
                          should_stop=should_stop, user=user, on_start=pidfile.write)
    finally:
        pidfile.remove()


def user_env(user: str) -> dict[str, str]:
    """HOME, USER and LOGNAME of JOB_USER, not of the agent (root), when it exists."""
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return {}  # the runner fails the job, naming the user
    return {"HOME": entry.pw_dir, "USER": user, "LOGNAME": user}


class PidFile:
    """The running attempt's pid file (workers/orphans.py): written once the job's
    session exists, removed when it is over. Failing to write it is logged, not fatal."""

    def __init__(self, directory: Path, job: Job) -> None:
        self.directory, self.job = directory, job
        self.path: Path | None = None

    def write(self, pid: int) -> None:
        try:
            self.path = orphans.record(self.directory, self.job.job_id, self.job.attempt, pid)
        except OSError as e:
            log.warning("job %s: cannot record its pid (%s); a dead agent could leave it running",
                        self.job.job_id, e)

    def remove(self) -> None:
        orphans.forget(self.path)


def stop_check(rt: Runtime, job_id: str, attempt: int) -> Callable[[], str | None]:
    """A check, throttled to one query per CANCEL_POLL_S, that says why to stop (or None)."""
    next_at = 0.0

    def check() -> str | None:
        nonlocal next_at
        if time.monotonic() < next_at:
            return None
        next_at = time.monotonic() + CANCEL_POLL_S
        try:
            with rt.sessions() as s:
                state, current = s.execute(
                    select(JobRow.state, JobRow.attempt).where(JobRow.job_id == job_id)
                ).one()
        except OperationalError:
            return None  # Postgres away: keep running, the end is recorded when it is back
        if current != attempt:
            return "superseded by a newer attempt"
        return None if state == JobState.RUNNING.value else f"job is {state}"

    return check


def record_end(
    rt: Runtime, job: Job, outcome: runner.Outcome, path: Path, *, clock: Callable[[], datetime]
) -> Job | None:
    """Record the end, retrying while Postgres is away so no finished job is lost."""
    if outcome.reason is None:
        target = JobState.DONE
    else:
        target = JobState.CANCELLED if outcome.cancelled else JobState.FAILED
    delay = 0.5
    while True:
        try:
            with rt.sessions.begin() as s:
                ended = job_store.finish(
                    s, job.job_id, attempt=job.attempt, target=target, now=clock(),
                    reason=outcome.reason, exit_code=outcome.exit_code, log_tail=runner.tail(path),
                )
            log_end(job, ended, outcome)
            return ended
        except (InvalidTransition, StaleAttempt) as e:
            log.info("job %s: end not recorded: %s", job.job_id, e)
            return None
        except OperationalError as e:
            log.warning("job %s ended but Postgres is away (%s); retrying in %.1fs",
                        job.job_id, e.orig, delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def log_end(job: Job, ended: Job | None, outcome: runner.Outcome) -> None:
    """One line for how the attempt ended (``ended`` is None if the job had moved on)."""
    fields = job_fields(job.job_id, job.node, attempt=job.attempt, exit_code=outcome.exit_code,
                        reason=outcome.reason)
    if ended is None:
        log.info("job %s: attempt %s ended (exit %s) after the job had moved on", job.job_id,
                 job.attempt, outcome.exit_code, extra=fields)
        return
    log.info("job %s %s on %s (exit %s)%s", job.job_id, ended.state.value, job.node, outcome.exit_code,
             f": {outcome.reason}" if outcome.reason else "", extra={**fields, "state": ended.state.value})


def log_file(rt: Runtime, job_id: str) -> Path:
    path = log_path(rt.settings.log_dir, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
