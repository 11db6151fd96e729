"""Counts for monitoring, read from Postgres at the moment they are asked for.

The counts come from job_counters (overlay/store/counters.py), which triggers keep in
the transaction of every change: the numbers survive any process restart, agree across
the API's workers, and cost the same to read with ten jobs stored or ten million.
Counters never go down, even when retention deletes the rows they counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from overlay.states import JobState
from overlay.store import counters as counter_store
from overlay.store.tables import JobRow


@dataclass(frozen=True, kw_only=True)
class Histogram:
    """Cumulative counts per upper bound (as Prometheus wants them), the total and the sum."""

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]
    count: int
    sum: float


@dataclass(frozen=True, kw_only=True)
class Counters:
    """Every job counter at one moment (one query)."""

    values: dict[str, tuple[int, float]]

    def jobs_by_state(self) -> dict[JobState, int]:
        """How many jobs are in each state now (every state present, zeros included)."""
        return {s: self._n(f"jobs:{s.value}") for s in JobState}

    def entered(self) -> dict[JobState, int]:
        """How many transitions into each state were ever recorded (submits are QUEUED events)."""
        return {s: self._n(f"entered:{s.value}") for s in JobState}

    def preemptions(self) -> int:
        """Running attempts ever preempted."""
        return self._n("preemptions")

    def submitted(self) -> int:
        """Jobs ever submitted: the events with no state before them."""
        return self._n("submitted")

    def histogram(self, name: str, bounds: Sequence[float]) -> Histogram:
        """``placement_latency`` (submit to each placement) or ``queue_wait`` (submit to each start)."""
        observed = [(_bound(key.partition(":")[2]), n, total)
                    for key, (n, total) in self.values.items() if key.startswith(f"{name}:")]
        return Histogram(
            bounds=tuple(bounds),
            cumulative=tuple(sum(n for le, n, _ in observed if le <= b) for b in bounds),
            count=sum(n for _, n, _ in observed),
            sum=sum(t for _, _, t in observed),
        )

    def _n(self, name: str) -> int:
        return self.values.get(name, (0, 0.0))[0]


def counters(session: Session) -> Counters:
    """Fold pending deltas if no one else is, and read every counter (one statement)."""
    return Counters(values=counter_store.fold_and_read(session))


def oldest_queued_at(session: Session) -> datetime | None:
    """The oldest QUEUED job's submit time: the first entry of ix_jobs_status_enqueued_at."""
    return session.scalar(select(func.min(JobRow.enqueued_at)).where(JobRow.state == JobState.QUEUED.value))


def count_jobs(session: Session, state: JobState | None) -> int:
    """How many jobs are in ``state`` (in any state if None), from the counters."""
    by_state = Counters(values=counter_store.read(session)).jobs_by_state()
    return by_state[state] if state is not None else sum(by_state.values())


def _bound(le: str) -> float:
    return float("inf") if le == "+Inf" else float(le)
