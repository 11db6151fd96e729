"""Running one job attempt on this node, end to end: claim it, start it, watch it,
record how it ended. Functions appear in the order an attempt calls them."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from sqlalchemy.exc import OperationalError

from overlay.errors import InvalidTransition, JobNotFound, StaleAttempt
from overlay.launch import job_argv, job_env, log_path
from overlay.logfmt import job_fields
from overlay.model import Job
from overlay.states import JobState
from overlay.store import jobs as job_store
from workers import orphans, runner
from workers.runtime import Runtime

log = logging.getLogger(__name__)
CANCEL_POLL_S = 0.5


def postgres_clock() -> datetime | None:
    """No time of the agent's own: the store takes Postgres's (overlay/store/session.py)."""
    return None


Clock = Callable[[], datetime | None]


def execute(
    rt: Runtime, job_id: str, attempt: int, *, clock: Clock = postgres_clock
) -> runner.Outcome | None:
    """Run one attempt of a job on this node and record its end; how it ended, or None
    if the message was stale or redelivered (then nothing happens).

    Timestamps are Postgres's clock unless ``clock`` (tests) gives them.
    """
    job = start(rt, job_id, attempt, now=clock())
    if job is None:
        return None
    try:
        return run_started(rt, job, clock=clock)
    finally:
        rt.agent.unclaim(job_id, attempt)


def start(rt: Runtime, job_id: str, attempt: int, *, now: datetime | None = None) -> Job | None:
    """PLACED -> RUNNING if this message is for the job's current attempt on this node;
    None (and nothing changes) if the attempt is not this message's to start.

    The attempt is claimed first, so that recovering a dead agent's attempts
    (workers/heartbeat.py) never takes a job this process is starting.
    """
    rt.agent.claim(job_id, attempt)
    try:
        with rt.sessions.begin() as s:
            job = job_store.start(s, job_id, attempt=attempt, node=rt.settings.node_name, now=now)
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


def run_started(rt: Runtime, job: Job, *, clock: Clock = postgres_clock) -> runner.Outcome:
    """Run a started attempt to its end, holding its GPUs meanwhile, and record the end."""
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


def log_file(rt: Runtime, job_id: str) -> Path:
    path = log_path(rt.settings.log_dir, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def launch(rt: Runtime, job: Job, path: Path) -> runner.Outcome:
    """Run the job's command (or the fake executor) until it ends, is cancelled or times out."""
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
                state, current = job_store.attempt_state(s, job_id)
        except OperationalError:
            return None  # Postgres away: keep running, the end is recorded when it is back
        except JobNotFound:
            return "job was deleted"
        if current != attempt:
            return "superseded by a newer attempt"
        return None if state is JobState.RUNNING else f"job is {state.value}"

    return check


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
                ended = job_store.finish(s, job.job_id, attempt=job.attempt, target=target, now=clock(),
                                         reason=outcome.reason, ending=ending)
            log_end(job, ended, outcome)
            return ended
        except (StaleAttempt, JobNotFound) as e:
            log.info("job %s: attempt %s ended (exit %s) after the job had moved on: %s", job.job_id,
                     job.attempt, outcome.exit_code, e.message,
                     extra=job_fields(job.job_id, job.node, attempt=job.attempt, exit_code=outcome.exit_code))
            release_attempt(rt, job)
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
        with rt.sessions.begin() as s:
            job_store.release_gpus(s, job.job_id, attempt=job.attempt)
    except OperationalError as e:
        log.warning("job %s: could not free attempt %s's GPUs (%s); reconcile will", job.job_id,
                    job.attempt, e.orig)


def log_end(job: Job, ended: Job, outcome: runner.Outcome) -> None:
    """One line for how the attempt ended."""
    fields = job_fields(job.job_id, job.node, attempt=job.attempt, exit_code=outcome.exit_code,
                        reason=outcome.reason, state=ended.state.value)
    log.info("job %s %s on %s (exit %s)%s", job.job_id, ended.state.value, job.node, outcome.exit_code,
             f": {outcome.reason}" if outcome.reason else "", extra=fields)


def jobs_waiting(rt: Runtime) -> bool:
    """Whether a job waits for placement (so that the GPUs and slot just freed may serve it)."""
    with rt.sessions() as s:
        return job_store.any_queued(s)
