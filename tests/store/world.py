"""The store tier's world: the test database in domain terms (nodes with fake GPUs, jobs and
where they stand), a fixed clock, and ``race`` for running transactions at once.

No processes, no Celery, no sleeps: every function is called directly with a ``now``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from overlay.gpus.fake import FakeProbe
from overlay.model import Job, JobSpec, Placement, ProbeReport
from overlay.store import cluster_state as cluster_store
from overlay.store import gangs
from overlay.store import jobs as job_store
from overlay.store import nodes as node_store
from overlay.store.tables import GpuAllocationRow

A100 = "NVIDIA A100-SXM4-80GB:81920"
H100 = "NVIDIA H100 80GB HBM3:81559"
# Every test's clock starts here; tests step it with ``T0 + seconds(n)``.
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


def ticking(start: datetime, *, step: float = 1.0) -> Callable[[], datetime]:
    """A clock for code that takes one: ``start`` on the first call, ``step`` s later on each next."""
    calls = 0

    def now() -> datetime:
        nonlocal calls
        calls += 1
        return start + seconds(step * (calls - 1))

    return now


class Cluster:
    """The store's tables as a cluster: nodes heartbeat, jobs are submitted, placed and
    started, and the test reads back jobs, GPU holders and events. Each call is one
    committed transaction, as the scheduler's or an agent's would be."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self._probes: dict[str, FakeProbe | None] = {}
        self._nodes: dict[str, dict[str, Any]] = {}

    # -- nodes ---------------------------------------------------------------------------------

    def node(self, name: str, *, gpus: int = 4, model: str = A100, labels: dict[str, str] | None = None,
             slots: int | None = None, at: datetime = T0) -> None:
        """Register ``name`` with ``gpus`` fake GPUs of ``model`` ("NAME:MEMORY_MB"), as its
        agent's first heartbeat would; ``slots`` limits how many jobs it takes at once."""
        # No GPUs: no probe (an empty FAKE_GPUS would give the node's default inventory).
        self._probes[name] = FakeProbe(node_name=name, fake_gpus=f"{gpus}x{model}") if gpus else None
        self._nodes[name] = dict(labels=dict(labels or {}), agent_health={"job_slots": slots})
        self.heartbeat(name, at=at)

    def heartbeat(self, name: str, *, at: datetime) -> None:
        """``name``'s agent says it is alive at ``at``."""
        probe = self._probes[name]
        report = probe.sample() if probe else ProbeReport(mode="fake", gpus=())
        with self.sessions.begin() as s:
            node_store.record_heartbeat(s, name=name, hostname=f"{name}.test", report=report, now=at,
                                        **self._nodes[name])

    def reconcile_has_been_ticking(self, *, until: datetime) -> None:
        """Reconcile ran regularly up to ``until``: its next tick may judge silent nodes at once
        (a first tick, or one after a gap, waits a TTL: see overlay/liveness.py)."""
        with self.sessions.begin() as s:
            cluster_store.save_reconcile_state(s, tick=until, paused_until=None)

    # -- jobs ----------------------------------------------------------------------------------

    def submit(self, job_id: str, *, at: datetime = T0, cmd: tuple[str, ...] = ("train",),
               **spec: Any) -> Job:
        """A QUEUED job; ``spec`` holds JobSpec fields (gpus, gpu_model, max_retries, ...)."""
        with self.sessions.begin() as s:
            return job_store.insert_job(s, JobSpec(job_id=job_id, cmd=cmd, **spec), now=at)

    def place(self, job_id: str, *, on: str, gpus: tuple[int, ...] = (), at: datetime = T0) -> Job:
        """The scheduler placed the job on ``on``'s ``gpus`` (raises GpuTaken if one is held)."""
        with self.sessions.begin() as s:
            return job_store.place(s, job_id, Placement(node=on, gpus=gpus), now=at)

    def start(self, job_id: str, *, at: datetime = T0) -> Job:
        """Its agent started the job's current attempt."""
        current = self.job(job_id)
        assert current.node is not None, f"{job_id} is not placed"
        with self.sessions.begin() as s:
            return gangs.start(s, job_id, attempt=current.attempt, part=0, node=current.node, now=at)

    def running(self, job_id: str, *, on: str, gpus: tuple[int, ...] = (), at: datetime = T0,
                **spec: Any) -> Job:
        """A job submitted, placed on ``on``'s ``gpus`` and started, all at ``at``."""
        self.submit(job_id, at=at, **spec)
        self.place(job_id, on=on, gpus=gpus, at=at)
        return self.start(job_id, at=at)

    def cancel(self, job_id: str, *, at: datetime = T0) -> Job:
        with self.sessions.begin() as s:
            return job_store.cancel(s, job_id, now=at)

    # -- what the database says ----------------------------------------------------------------

    def job(self, job_id: str) -> Job:
        with self.sessions() as s:
            return job_store.read_job(s, job_id)

    def holders(self, node: str) -> dict[int, tuple[str, int]]:
        """``node``'s held GPUs: index -> (job_id, attempt)."""
        with self.sessions() as s:
            rows = s.scalars(select(GpuAllocationRow).where(GpuAllocationRow.node == node))
            return {a.gpu_index: (a.job_id, a.attempt) for a in rows}

    def events(self, job_id: str) -> list[tuple[str, int, str | None]]:
        """The job's events as (state, attempt, reason), oldest first."""
        with self.sessions() as s:
            return [(e.to_state, e.attempt, e.reason) for e in job_store.events(s, job_id)]


def race(*calls: Callable[[], Any], timeout: float = 30) -> list[Any]:
    """Run each call in a thread of its own, released together by a barrier; return what
    each returned, or the exception it raised, in the order given."""
    barrier = threading.Barrier(len(calls), timeout=timeout)
    results: list[Any] = [None] * len(calls)

    def run(i: int, call: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            results[i] = call()
        except Exception as e:
            results[i] = e

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a racing call did not finish: a deadlock?"
    return results
