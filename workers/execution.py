"""Running one job attempt on this node, end to end: claim it, start it, watch it,
record how it ended. Functions appear in the order an attempt calls them."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from sqlalchemy.exc import OperationalError

from overlay.errors import InvalidTransition, JobNotFound, StaleAttempt
from overlay.launch import job_argv, log_path
from overlay.logfmt import job_fields
from overlay.model import Job
from overlay.states import JobState
from overlay.store import gangs, moves
from overlay.store import jobs as job_store
from overlay.store.session import postgres_clock
from workers import runner, supervision
from workers.attempts import AttemptDir
from workers.runtime import Runtime

log = logging.getLogger(__name__)


Clock = Callable[[], datetime | None]


def execute(
    rt: Runtime, job_id: str, attempt: int, *, part: int = 0, clock: Clock = postgres_clock
) -> runner.Outcome | None:
    """Run one attempt of a job (one ``part`` of a gang job) on this node and record its
    end; how it ended, or None if the message was stale or redelivered (then nothing happens).

    Timestamps are Postgres's clock unless ``clock`` (tests) gives them.
    """
    job = start(rt, job_id, attempt, part=part, now=clock())
    if job is None:
        return None
    try:
        return run_started(rt, job, clock=clock)
    finally:
        rt.agent.unclaim(job_id, attempt)


def start(rt: Runtime, job_id: str, attempt: int, *, part: int = 0,
          now: datetime | None = None) -> Job | None:
    """PLACED -> RUNNING if this message is for the job's current attempt on this node (for
    a gang job: the part starts, and the first part to start moves the job); None (and
    nothing changes) if the attempt is not this message's to start.

    The attempt is claimed first, so that recovering a dead agent's attempts
    (workers/heartbeat.py) never takes a job this process is starting.
    """
    rt.agent.claim(job_id, attempt)
    try:
        with rt.sessions.begin() as s:
            job = gangs.start(s, job_id, attempt=attempt, part=part, node=rt.settings.node_name, now=now)
    except (StaleAttempt, JobNotFound) as e:
        rt.agent.unclaim(job_id, attempt)
        log.info("job %s: ignoring run_job for attempt %s: %s", job_id, attempt, e.message,
                 extra=job_fields(job_id, rt.settings.node_name))
        return None
    except BaseException:
        rt.agent.unclaim(job_id, attempt)
        raise
    log.info("job %s running on %s, GPUs %s", job_id, job.node, list(job.gpus), extra=job_fields(
        job_id, job.node, state=job.state.value, attempt=attempt, gpus=list(job.gpus)))
    return job


def run_started(rt: Runtime, job: Job, *, clock: Clock = postgres_clock) -> runner.Outcome | None:
    """Run a started attempt to its end, holding its GPUs meanwhile, and record the end;
    None if this agent is stopping first (its supervisor goes on, the next agent reports it)."""
    path = log_file(rt, job.job_id, job.part)
    which = f" part {job.part} of {job.spec.nodes}" if job.spec.nodes > 1 else ""
    header = (f"=== overlay: {job.job_id} attempt {job.attempt}{which} on {rt.settings.node_name}, "
              f"CUDA_VISIBLE_DEVICES={','.join(map(str, job.gpus))} ===\n")
    rt.agent.hold(job.job_id, job.gpus)
    try:
        outcome = launch(rt, job, path, header)
    finally:
        rt.agent.free(job.job_id)
    if outcome is None:
        log.info("job %s: agent stopping; attempt %s goes on under its supervisor", job.job_id,
                 job.attempt, extra=job_fields(job.job_id, job.node, attempt=job.attempt))
        return None
    record_end(rt, job, outcome, path, clock=clock)
    forget(rt, supervision.attempt_dir(rt, job.job_id, job.attempt))
    return outcome


def log_file(rt: Runtime, job_id: str, part: int = 0) -> Path:
    path = log_path(rt.settings.log_dir, job_id, part)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def launch(rt: Runtime, job: Job, path: Path, header: str) -> runner.Outcome | None:
    """Run the job's command under its supervisor (or the fake executor here) until it
    ends, is cancelled, times out or is fenced."""
    if rt.settings.executor == "fake":
        with open(path, "a") as out:
            out.write(header)
        return runner.fake_run(job.spec.cmd, log_path=path,
                               should_stop=lambda: rt.agent.stop_reason(job.job_id, job.attempt))
    argv = job_argv(job.spec)
    if job.spec.image and shutil.which(argv[0]) is None:
        reason = f"apptainer is not installed on node {rt.settings.node_name}"
        with open(path, "a") as out:
            out.write(f"{header}overlay: {reason}\n")
        return runner.Outcome(exit_code=None, reason=reason)
    return supervision.run(rt, job, path, header)


def report_found(rt: Runtime, directory: AttemptDir) -> None:
    """Wait for an attempt a previous agent process started, and record its end."""
    rt.agent.hold(directory.job_id, directory.gpus())  # /health and /metrics show it running
    try:
        outcome = supervision.wait(rt, directory)
        if outcome is None:
            return  # stopping: the next agent process reports it
        job = read_attempt(rt, directory)
        if job is not None:
            record_end(rt, job, outcome, log_file(rt, job.job_id, job.part))
        forget(rt, directory)
    finally:
        rt.agent.free(directory.job_id)
        rt.agent.unsupervise(directory)
        rt.agent.unclaim(directory.job_id, directory.attempt)


def read_attempt(rt: Runtime, directory: AttemptDir) -> Job | None:
    """The job of an attempt directory, as of that attempt (None if the job is gone);
    waits for Postgres while it is away."""
    delay = 0.5
    while True:
        try:
            with rt.sessions() as s:
                job = job_store.read_job(s, directory.job_id)
                if job.spec.nodes > 1:  # the part of this node (a gang's parts are on distinct nodes)
                    job = gangs.as_this_node(s, job, rt.settings.node_name)
            return replace(job, attempt=directory.attempt)
        except JobNotFound:
            return None
        except OperationalError as e:
            log.warning("job %s: cannot read it (%s); retrying in %.1fs", directory.job_id, e.orig, delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def forget(rt: Runtime, directory: AttemptDir) -> None:
    """The attempt's end is in Postgres: its directory goes."""
    rt.agent.unsupervise(directory)
    directory.remove()


def record_end(
    rt: Runtime, job: Job, outcome: runner.Outcome, path: Path, *, clock: Clock = postgres_clock
) -> Job | None:
    """Record the end, retrying while Postgres is away so no finished job is lost; the
    job as it is now, or None if the attempt was no longer the job's."""
    target = end_state(outcome)
    ending = job_store.Ending(exit_code=outcome.exit_code, log_tail=runner.tail(path))
    delay = 0.5
    while True:
        try:
            with rt.sessions.begin() as s:
                if job.spec.nodes > 1:
                    ended = gangs.finish_part(s, job.job_id, attempt=job.attempt, part=job.part,
                                              target=target, now=clock(), reason=outcome.reason,
                                              ending=ending)
                else:
                    ended = moves.finish(s, job.job_id, attempt=job.attempt, target=target, now=clock(),
                                         reason=outcome.reason, ending=ending)
            log_end(job, ended, outcome)
            return ended
        except (StaleAttempt, JobNotFound) as e:
            release_attempt(rt, job)
            fields = job_fields(job.job_id, job.node, attempt=job.attempt, exit_code=outcome.exit_code)
            if outcome.preempted and isinstance(e, StaleAttempt):  # requeued as it was preempted
                next_attempt = max(e.current, job.attempt + 1)  # (requeued, it keeps its number until placed)
                log.info("job %s: preempted attempt %s stopped (exit %s); the job goes on as attempt %s",
                         job.job_id, job.attempt, outcome.exit_code, next_attempt, extra=fields)
            else:
                log.info("job %s: attempt %s ended (exit %s, %s) after the job had moved on: %s", job.job_id,
                         job.attempt, outcome.exit_code, outcome.reason or "clean", e.message, extra=fields)
            return None
        except InvalidTransition as e:
            log.info("job %s: end not recorded: %s", job.job_id, e)
            return None
        except OperationalError as e:
            log.warning("job %s ended but Postgres is away (%s); retrying in %.1fs",
                        job.job_id, e.orig, delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def end_state(outcome: runner.Outcome) -> JobState:
    """DONE on a clean exit, CANCELLED when stopped by a cancel, FAILED otherwise."""
    if outcome.reason is None:
        return JobState.DONE
    return JobState.CANCELLED if outcome.cancelled else JobState.FAILED


def release_attempt(rt: Runtime, job: Job) -> None:
    """Free what a superseded attempt still holds (reconcile frees it later if this fails)."""
    try:
        with rt.sessions.begin() as s:  # a gang job's part: only this node's GPUs
            job_store.release_gpus(s, job.job_id, attempt=job.attempt,
                                   node=job.node if job.spec.nodes > 1 else None)
    except OperationalError as e:
        log.warning("job %s: could not free attempt %s's GPUs (%s); reconcile will", job.job_id,
                    job.attempt, e.orig)


def log_end(job: Job, ended: Job, outcome: runner.Outcome) -> None:
    """One line for how the attempt ended."""
    fields = job_fields(job.job_id, job.node, attempt=job.attempt, exit_code=outcome.exit_code,
                        reason=outcome.reason, state=ended.state.value)
    log.info("job %s %s on %s (exit %s)%s", job.job_id, ended.state.value, job.node, outcome.exit_code,
             f": {outcome.reason}" if outcome.reason else "", extra=fields)


@dataclass(frozen=True)
class AfterEnd:
    """What follows an attempt's recorded end: the nodes whose parts of a gang job must stop
    now (those still running when the job has ended: a part failed or was cancelled; none
    for other jobs) and why, and whether a job waits for placement (so that the GPUs and
    slot just freed may serve it)."""

    stop: list[str]
    why: str
    jobs_waiting: bool


def after_end(rt: Runtime, job_id: str, attempt: int, *, part: int) -> AfterEnd:
    """Read in one session (an agent does this after every job's end)."""
    with rt.sessions() as s:
        stop, why = gangs.to_stop_after(s, job_id, attempt=attempt, part=part)
        return AfterEnd(stop=stop, why=why, jobs_waiting=job_store.any_queued(s))
