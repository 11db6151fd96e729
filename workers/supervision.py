"""The agent's side of the job supervisors (workers/supervisor.py): start one per attempt
and wait for its outcome, find those a previous agent process left, renew their leases
while Postgres hears this node, and pass cancels on.

A lease is renewed only right after this node's ``last_seen`` was written in Postgres
(overlay/store/agents.py ``renew_lease``): a node whose agent is frozen or cut off stops
renewing, so its supervisors kill their jobs ``FENCE_S`` later, before reconcile (after
``NODE_TTL_S`` of that same silence) gives the jobs to another node.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from overlay.errors import ConfigError
from overlay.gang import Rendezvous
from overlay.launch import job_argv, job_env, log_truncated_marker
from overlay.model import Job
from overlay.store import agents as agent_store
from workers import attempts, cgroups, gpu_isolation, runner
from workers.attempts import AttemptDir
from workers.runtime import Runtime

log = logging.getLogger(__name__)
WAIT_TICK_S = 0.5
PASSED_ENV = ("PATH", "LANG", "LC_ALL", "TZ")
PREEMPT_FILE_ENV = "OVERLAY_PREEMPT_FILE"


def attempt_dir(rt: Runtime, job_id: str, attempt: int) -> AttemptDir:
    return AttemptDir.of(rt.settings.state_dir, rt.settings.node_name, job_id, attempt)


def spec_of(rt: Runtime, job: Job, log_path: Path, header: str) -> dict[str, Any]:
    """What the supervisor needs to run the attempt, resolved here (it reads no settings)."""
    s = rt.settings
    user = s.job_user if os.geteuid() == 0 and s.job_user else None
    # Built from scratch: of the agent's environment only PATH and the locale (no
    # database URL, token or password), then the job's user's HOME, USER and LOGNAME.
    env = job_env(job.spec, job.gpus, agent_env={k: v for k, v in os.environ.items() if k in PASSED_ENV},
                  attempt=job.attempt, rendezvous=rendezvous_of(job))
    name, home = user_entry(user)
    env.update(HOME=home, USER=name, LOGNAME=name)
    # Made (``OVERLAY_PREEMPTED=1``) just before the SIGTERM of a preemption: a job that
    # traps SIGTERM tells a preemption (checkpoint, it runs again) from a cancel or timeout.
    env[PREEMPT_FILE_ENV] = str(attempt_dir(rt, job.job_id, job.attempt).notice.resolve())
    return {
        "job_id": job.job_id, "attempt": job.attempt, "part": job.part, "argv": job_argv(job.spec),
        "env": env,
        "user": user, "log_path": str(log_path), "log_max_bytes": s.log_max_bytes,
        "log_marker": log_truncated_marker(s.log_max_bytes), "header": header,
        "timeout_s": job.spec.timeout_s, "memory_mb": job.spec.memory_mb, "gpus": list(job.gpus),
        "device_dir": s.device_dir, "gpu_isolation": rt.agent.gpu_isolation, "fence_s": s.fence_s,
    }


def rendezvous_of(job: Job) -> Rendezvous | None:
    """Where a gang job's parts meet (None for a one-node job)."""
    if job.spec.nodes <= 1 or job.master_addr is None or job.master_port is None:
        return None
    return Rendezvous(master_addr=job.master_addr, master_port=job.master_port, rank=job.part)


def user_entry(user: str | None) -> tuple[str, str]:
    """(name, home) of the user jobs run as (None: the agent's own user)."""
    import pwd

    if user is None:
        entry = pwd.getpwuid(os.geteuid())
    else:
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            return (user, "/")  # the supervisor fails the job, naming the user
    return entry.pw_name, entry.pw_dir


def run(rt: Runtime, job: Job, log_path: Path, header: str) -> runner.Outcome | None:
    """Run the attempt under a supervisor of its own and wait for its end; None if this
    agent is stopping first (the supervisor goes on; the next agent process reports it)."""
    directory = attempt_dir(rt, job.job_id, job.attempt)
    rt.agent.supervise(directory)
    try:
        attempts.prepare(directory, spec_of(rt, job, log_path, header))
        supervisor = start_supervisor(rt, directory)
    except OSError as e:
        rt.agent.unsupervise(directory)
        return runner.Outcome(exit_code=None, reason=f"cannot start the job's supervisor: {e}")
    try:
        while not supervisor.ended(WAIT_TICK_S):
            if rt.agent.stopping:
                return None
    finally:
        supervisor.close()
    return outcome_of(directory)


def start_supervisor(rt: Runtime, directory: AttemptDir) -> attempts.Supervisor:
    """The attempt's supervisor, forked by this agent's launcher; a new interpreter where
    SUPERVISOR_LAUNCHER=exec or the launcher cannot start it (it says so in the log)."""
    if rt.settings.supervisor_launcher == "fork":
        try:
            return rt.launcher.launch(directory)
        except attempts.LauncherUnavailable:
            pass
    return attempts.spawn(directory)


def wait(rt: Runtime, directory: AttemptDir) -> runner.Outcome | None:
    """Wait for a supervisor this process did not start (found in the state directory)."""
    while directory.outcome() is None and directory.supervisor_alive():
        if rt.agent.stopping:
            return None
        time.sleep(WAIT_TICK_S)
    return outcome_of(directory)


def outcome_of(directory: AttemptDir) -> runner.Outcome:
    """The recorded outcome; a supervisor that died without one fails the attempt (and
    whatever it left in the attempt's group is killed)."""
    recorded = directory.outcome()
    if recorded is None:
        directory.kill_leftovers()
        return runner.Outcome(exit_code=None, reason="the job's supervisor died without recording the end")
    return runner.Outcome(exit_code=recorded.get("exit_code"), reason=recorded.get("reason"),
                          cancelled=bool(recorded.get("cancelled")),
                          preempted=bool(recorded.get("preempted")))


def cancel(rt: Runtime, job_id: str, attempt: int | None, reason: str) -> bool:
    """Tell the attempt's supervisor (or the fake executor) to stop; whether one was here."""
    found = False
    for directory in rt.agent.supervised_now():
        if directory.job_id == job_id and attempt in (None, directory.attempt):
            directory.cancel(reason)
            found = True
    return rt.agent.request_stop(job_id, attempt, reason) or found


def preempt(rt: Runtime, job_id: str, attempt: int, reason: str, *, grace_s: float) -> bool:
    """Tell the attempt's supervisor (or the fake executor) to preempt it: SIGTERM, then
    ``grace_s`` to checkpoint and exit, then the kill. Whether this asked it first (a repeat,
    from the heartbeat's check, asks nothing new)."""
    first = False
    for directory in rt.agent.supervised_now():
        if directory.key == (job_id, attempt) and directory.preempt(reason, grace_s=grace_s):
            first = True
            log.info("job %s: preempting attempt %s (%s): SIGTERM, %ss to checkpoint, then the kill",
                     job_id, attempt, reason, grace_s)
    if rt.settings.executor == "fake" and rt.agent.stop_reason(job_id, attempt) is None:
        first |= rt.agent.request_stop(job_id, attempt, reason)
    return first


def leftovers(rt: Runtime) -> list[AttemptDir]:
    """The attempt directories of this node no thread of this process watches."""
    return [d for d in attempts.found(rt.settings.state_dir, rt.settings.node_name)
            if not rt.agent.runs(d.job_id, d.attempt)]


def reattach(rt: Runtime, report: Callable[[Runtime, AttemptDir], None]) -> list[AttemptDir]:
    """Watch, each on a thread, the attempts found in the state directory that no thread
    watches (a previous agent process started them); ``report`` records each end."""
    found = leftovers(rt)
    for directory in found:
        rt.agent.claim(directory.job_id, directory.attempt)
        rt.agent.supervise(directory)
        threading.Thread(target=report, args=(rt, directory), daemon=True,
                         name=f"attempt-{directory.job_id}.{directory.attempt}").start()
    return found


def say_reattached(rt: Runtime, found: list[AttemptDir]) -> None:
    """One line naming the attempts re-attached at start (logged once logging is set up)."""
    if found:
        log.info("re-attached to %d attempt(s) of node %s: %s", len(found), rt.settings.node_name,
                 ", ".join(f"{d.job_id}#{d.attempt}" for d in found[:10]))


def renew_leases(rt: Runtime) -> bool:
    """Say in Postgres that this node is alive and, if that went through, renew every
    supervisor's lease; whether it went through."""
    try:
        with rt.sessions.begin() as s:
            renewed = agent_store.renew_lease(s, rt.settings.node_name)
    except Exception as e:  # Postgres away or cut off: the leases run out, as they must
        log.debug("lease renewal failed: %s", e)
        return False
    if renewed:
        for directory in attempts.found(rt.settings.state_dir, rt.settings.node_name):
            try:
                directory.renew()
            except OSError as e:
                log.warning("cannot renew the lease of %s: %s", directory.path, e)
    return renewed


def keep_leases(rt: Runtime) -> threading.Thread:
    """Renew leases every quarter of FENCE_S (at most every second) on a daemon thread."""
    every = min(1.0, rt.settings.fence_s / 4)

    def loop() -> None:
        while True:
            started = time.monotonic()
            renew_leases(rt)
            time.sleep(max(0.05, every - (time.monotonic() - started)))

    thread = threading.Thread(target=loop, name="lease", daemon=True)
    thread.start()
    return thread


def containment() -> str:
    """What this host gives a job: cgroup2, cgroup1 or none (said once, with a warning if none)."""
    kind = cgroups.detect()
    if kind == "none":
        log.warning("no writable cgroup here: jobs are tracked by process group only (a job "
                    "can escape with setsid), and memory_mb is not enforced")
    return kind


def choose_gpu_isolation(setting: str) -> str:
    """How jobs here are kept to their own GPUs' device nodes (GPU_ISOLATION ``setting``):
    ``devices``, ``namespace`` or ``none``, said once, with a warning if ``auto`` finds none;
    raise ConfigError if the setting forces a mechanism this host lacks."""
    devices = gpu_isolation.devices_cgroup()
    why_not = None  # the probe costs a process: run only where a namespace may be used
    if setting == "namespace" or (setting == "auto" and not devices):
        why_not = gpu_isolation.why_no_namespace(attempts.supervisor_env())
    chosen = gpu_isolation.choose(setting, devices_cgroup=devices, namespace=why_not is None)
    if chosen is None and setting == "devices":
        raise ConfigError("GPU_ISOLATION=devices, but this host has no writable cgroup v1 devices "
                          "controller (on cgroup2 use namespace)", setting="GPU_ISOLATION")
    if chosen is None:
        raise ConfigError(f"GPU_ISOLATION={setting}, but a job here cannot have a mount namespace "
                          f"of its own: {why_not}", setting="GPU_ISOLATION")
    if chosen == "none" and setting == "auto":
        log.warning("GPU device isolation is not enforced here: no writable cgroup v1 devices "
                    "controller, and no mount namespace for a job (%s); a job can open every GPU's "
                    "device node, though CUDA_VISIBLE_DEVICES names only its own", why_not)
    else:
        log.info("GPU device isolation: %s", chosen)
    return chosen
