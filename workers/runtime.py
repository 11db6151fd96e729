"""Per-process dependencies of the workers: settings, the database, the GPU probe."""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from overlay.config import Settings
from overlay.gpus import GpuProbe, open_probe
from overlay.store.holds import QueuedJobs
from overlay.store.session import make_engine, make_sessionmaker
from workers.attempts import Launcher
from workers.queues import PassRequests

log = logging.getLogger(__name__)


@dataclass
class AgentState:
    """What this agent process is doing now: GPUs busy by job, the attempts it runs,
    last heartbeat outcome, whether it has dealt with what a previous process left."""

    busy: dict[int, str] = field(default_factory=dict)
    attempts: set[tuple[str, int]] = field(default_factory=set)
    # How many jobs placement may give this node at once (None: no limit), see job_slots().
    job_slots: int | None = None
    last_heartbeat_at: float | None = None
    # time.monotonic() of the last heartbeat that reached Postgres.
    last_heartbeat_mono: float | None = None
    last_heartbeat_error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    # What contains a job here: cgroup2, cgroup1 or none (workers/cgroups.py detect()).
    containment: str = "none"
    # How a job is kept to its GPUs' device nodes: devices, namespace or none (workers/gpu_isolation.py).
    gpu_isolation: str = "none"
    # Set on SIGTERM: take no work, leave the supervisors running, let go of them.
    stopping: bool = False
    # The attempt directories of the supervisors this process watches (workers/supervision.py).
    supervised: dict[tuple[str, int], Any] = field(default_factory=dict)
    # The attempts found at start, started by a previous agent process of this node.
    reattached: list[Any] = field(default_factory=list)
    # Stop reasons sent to attempts run in-process (EXECUTOR=fake), by (job_id, attempt).
    stop_requests: dict[tuple[str, int], str] = field(default_factory=dict)

    def claim(self, job_id: str, attempt: int) -> None:
        """Say, before touching the job's row, that this process runs this attempt."""
        with self.lock:
            self.attempts.add((job_id, attempt))

    def unclaim(self, job_id: str, attempt: int) -> None:
        with self.lock:
            self.attempts.discard((job_id, attempt))
            self.stop_requests.pop((job_id, attempt), None)

    def claimed_now(self) -> list[tuple[str, int]]:
        with self.lock:
            return sorted(self.attempts)

    def runs(self, job_id: str, attempt: int) -> bool:
        with self.lock:
            return (job_id, attempt) in self.attempts

    def hold(self, job_id: str, gpus: tuple[int, ...]) -> None:
        with self.lock:
            self.busy.update({i: job_id for i in gpus})

    def free(self, job_id: str) -> None:
        with self.lock:
            self.busy = {i: j for i, j in self.busy.items() if j != job_id}

    def busy_now(self) -> dict[int, str]:
        with self.lock:
            return dict(self.busy)

    def supervise(self, directory: Any) -> None:
        with self.lock:
            self.supervised[directory.key] = directory

    def unsupervise(self, directory: Any) -> None:
        with self.lock:
            self.supervised.pop(directory.key, None)

    def supervised_now(self) -> list[Any]:
        with self.lock:
            return list(self.supervised.values())

    def request_stop(self, job_id: str, attempt: int | None, reason: str) -> bool:
        """Ask an attempt this process runs (one of ``job_id``'s if ``attempt`` is None) to
        stop; whether one runs here."""
        with self.lock:
            keys = [k for k in self.attempts if k[0] == job_id and attempt in (None, k[1])]
            for key in keys:
                self.stop_requests[key] = reason
            return bool(keys)

    def stop_reason(self, job_id: str, attempt: int) -> str | None:
        with self.lock:
            return self.stop_requests.get((job_id, attempt))


class Runtime:
    """Built once per worker process, on first use (after any fork)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.agent = AgentState()
        self.hostname = socket.gethostname()

    @cached_property
    def address(self) -> str:
        """How other nodes reach this one (a gang's MASTER_ADDR when its rank 0 runs here):
        NODE_ADDRESS, else the address this host reaches the database from, else its hostname."""
        return self.settings.node_address or route_address(self.settings.database_url) or self.hostname

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        # An agent frozen inside a transaction is cut off by Postgres after FENCE_S (its
        # supervisors fence its jobs then too), so its row locks stall no one for longer.
        idle = self.settings.fence_s if self.is_agent else None
        return make_sessionmaker(make_engine(self.settings.database_url, idle_in_transaction_s=idle))

    @cached_property
    def pass_requests(self) -> PassRequests:
        return PassRequests(self.settings.broker_url)

    @cached_property
    def queued_jobs(self) -> QueuedJobs:
        """The scheduler's copy of the queued jobs, by row version (overlay/store/holds.py)."""
        return QueuedJobs()

    @cached_property
    def probe(self) -> GpuProbe:
        """The node's GPU probe; raises GpuProbeError in real mode without NVML."""
        s = self.settings
        return open_probe(s.gpu_metrics_mode, node_name=s.node_name, fake_gpus=s.fake_gpus)

    @cached_property
    def launcher(self) -> Launcher:
        """This agent's supervisor launcher (its process starts on the first launch)."""
        return Launcher()

    @property
    def is_agent(self) -> bool:
        return bool(self.settings.node_name)


def route_address(database_url: str) -> str | None:
    """This host's address on the route to the database's host (a UDP socket is connected,
    which sends nothing); None when it has no route or the URL names no host."""
    from sqlalchemy.engine import make_url

    try:
        url = make_url(database_url)
        if not url.host:
            return None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((socket.gethostbyname(url.host), url.port or 5432))
            return str(probe.getsockname()[0])
    except (OSError, ValueError) as e:
        log.debug("no route address towards %s: %s", database_url.rpartition("@")[2], e)
        return None
