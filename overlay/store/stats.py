"""Counts for monitoring, read from Postgres at the moment they are asked for.

Everything here is derived from rows (jobs, job events, GPU allocations), so the
numbers survive any process restart and agree across the API's workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from overlay.states import JobState
from overlay.store.tables import JobEventRow, JobRow


@dataclass(frozen=True, kw_only=True)
class Histogram:
    """Cumulative counts per upper bound (as Prometheus wants them), the total and the sum."""

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]
    count: int
    sum: float


def jobs_by_state(session: Session) -> dict[JobState, int]:
    """How many jobs are in each state now (every state present, zeros included)."""
    rows = session.execute(select(JobRow.state, func.count()).group_by(JobRow.state))
    return _per_state({state: n for state, n in rows})


def oldest_queued_at(session: Session) -> datetime | None:
    return session.scalar(select(func.min(JobRow.enqueued_at)).where(JobRow.state == JobState.QUEUED.value))


def events_by_state(session: Session) -> dict[JobState, int]:
    """How many transitions into each state were ever recorded (submits are QUEUED events)."""
    rows = session.execute(select(JobEventRow.to_state, func.count()).group_by(JobEventRow.to_state))
    return _per_state({state: n for state, n in rows})


def submitted(session: Session) -> int:
    """Jobs ever submitted: the events with no state before them."""
    stmt = select(func.count()).select_from(JobEventRow).where(JobEventRow.from_state.is_(None))
    return int(session.scalar(stmt) or 0)


def placement_latency(session: Session, bounds: Sequence[float]) -> Histogram:
    """Seconds from submit to the latest placement, over every job placed at least once."""
    return _duration_histogram(session, JobRow.enqueued_at, JobRow.placed_at, bounds)


def queue_wait(session: Session, bounds: Sequence[float]) -> Histogram:
    """Seconds from submit until the job started running, over every job that started."""
    return _duration_histogram(session, JobRow.enqueued_at, JobRow.started_at, bounds)


def _duration_histogram(
    session: Session,
    start: InstrumentedAttribute[datetime],
    end: InstrumentedAttribute[datetime | None],
    bounds: Sequence[float],
) -> Histogram:
    """Seconds from ``start`` to ``end`` over every job that has both, bucketed in one scan."""
    seconds = func.extract("epoch", end - start)
    columns = [func.count().filter(seconds <= b) for b in bounds]
    row = session.execute(
        select(*columns, func.count(), func.coalesce(func.sum(seconds), 0)).where(end.is_not(None))
    ).one()
    *cumulative, count, total = row
    return Histogram(bounds=tuple(bounds), cumulative=tuple(int(c) for c in cumulative),
                     count=int(count), sum=float(total))


def _per_state(counts: dict[str, int]) -> dict[JobState, int]:
    return {s: int(counts.get(s.value, 0)) for s in JobState}
