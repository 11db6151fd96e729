"""What keeps queued jobs out of a pass before placement: dependencies not yet met (and
never to be met: those jobs are cancelled), arrays at their %N limit, and an attempt that
is still being stopped on its node."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, exists, func, literal_column, or_, select, update
from sqlalchemy.orm import Session

from overlay.arrays import ArrayGate, ArrayLoad, hold_back, limit_reason
from overlay.model import Job
from overlay.quota import Admit
from overlay.states import JobState
from overlay.store import arrays, dependencies
from overlay.store.jobs import JOB_COLUMNS, to_job
from overlay.store.tables import ArrayRow, GpuAllocationRow, JobRow


@dataclass(frozen=True, kw_only=True)
class Holds:
    """The jobs a pass may place (``ready``), why the others wait, and the arrays' loads,
    which the pass's admission check keeps counting (``gate``)."""

    ready: list[Job]
    waiting: dict[str, str] = field(default_factory=dict)
    loads: dict[str, ArrayLoad] = field(default_factory=dict)

    def gate(self, admit: Admit) -> Admit:
        return ArrayGate(admit, self.loads) if self.loads else admit


def hold(session: Session, queued: Sequence[Job], *, now: datetime) -> Holds:
    """Judge ``queued``'s dependencies (cancelling jobs whose can never be met) and arrays'
    limits; jobs neither holds are ``ready``."""
    judged = dependencies.settle(session, now=now)
    out = set(judged.cancelled) | judged.waiting.keys()
    rest = [j for j in queued if j.job_id not in out]
    loads = arrays.loads(session, (j.spec for j in rest))
    limited = hold_back((j.spec for j in rest), loads)
    waiting = judged.waiting | limited
    return Holds(ready=[j for j in rest if j.job_id not in limited], waiting=waiting, loads=loads)


@dataclass(frozen=True)
class QueueRead:
    """One read of queued jobs, its statements built once: the rows' versions (in order, up
    to ``:limit`` where it has one), the rows of ``:stale`` ids with their versions, and the
    whole rows (for a caller that keeps no copy)."""

    versions: Select[Any]
    rows: Select[Any]
    whole: Select[Any]

    @classmethod
    def of(cls, *where: ColumnElement[bool], order: Any = None, limited: bool = False) -> QueueRead:
        limit: Any = bindparam("limit") if limited else None
        return cls(versions=_limited(select(JobRow.job_id, XMIN).where(*where), order, limit),
                   rows=JOB_COLUMNS.add_columns(XMIN.label("row_version"))
                   .where(*where, JobRow.job_id.in_(bindparam("stale", expanding=True))),
                   whole=_limited(JOB_COLUMNS.where(*where), order, limit))


class QueuedJobs:
    """The queued jobs one scheduler process read last, each as of its row's version.

    A pass reads every queued job, and most of them are the same rows as the pass before
    (a deep queue behind a full fleet): decoding each into a ``Job`` was the largest part
    of a pass (docs/performance.md). Postgres gives each row version its own ``xmin`` (the
    transaction that wrote it), so a pass reads the queue's (job_id, xmin) pairs and
    fetches whole rows only for versions it has not seen; a row changed in any way is a
    new version. Entries of jobs that left the queue are dropped on each read.
    """

    def __init__(self) -> None:
        self._jobs: dict[str, tuple[str, Job]] = {}

    def read(self, session: Session, read: QueueRead, params: dict[str, Any] | None = None) -> list[Job]:
        """The jobs ``read`` selects (with ``params``), read through this cache."""
        conn = session.connection()
        versions = conn.execute(read.versions, params or {}).all()
        stale = [job_id for job_id, version in versions if self._jobs.get(job_id, ("",))[0] != version]
        if stale:  # rows changed since (or new): their versions now, if they still match
            for job_id in stale:
                self._jobs.pop(job_id, None)
            for row in conn.execute(read.rows, {**(params or {}), "stale": stale}):
                self._jobs[row.job_id] = (row.row_version, to_job(row))  # type: ignore[arg-type]
        return [self._jobs[job_id][1] for job_id, _ in versions if job_id in self._jobs]

    def clear(self) -> None:
        """Forget everything (a pass failed: the next one reads the whole queue again)."""
        self._jobs = {}

    def keep_only(self, jobs: Sequence[Job]) -> None:
        """Forget every job but ``jobs`` (those still queued)."""
        ids = {j.job_id for j in jobs}
        self._jobs = {job_id: entry for job_id, entry in self._jobs.items() if job_id in ids}


# A row version's id, as text (Postgres's xid type has no ordering: only equality is used).
XMIN: ColumnElement[str] = literal_column("jobs.xmin::text")


def _limited(stmt: Select[Any], order: Any, limit: Any) -> Select[Any]:
    stmt = stmt.order_by(order) if order is not None else stmt
    return stmt.limit(limit) if limit is not None else stmt


_QUEUED = JobRow.state == JobState.QUEUED
_LIMITED = exists().where(ArrayRow.array_id == JobRow.array_id, ArrayRow.max_running.is_not(None))
# The queued jobs but those of limited arrays; a limited array's first ``:limit`` queued tasks.
UNLIMITED = QueueRead.of(_QUEUED, or_(JobRow.array_id.is_(None), ~_LIMITED))
ARRAY_TASKS = QueueRead.of(_QUEUED, JobRow.array_id == bindparam("array_id"), order=JobRow.array_index,
                           limited=True)
# Each limited array with a queued task: its limit and its active tasks.
LIMITED_ARRAYS = (
    select(ArrayRow.array_id, ArrayRow.max_running,
           select(func.count()).where(JobRow.array_id == ArrayRow.array_id, JobRow.state.in_(arrays.ACTIVE))
           .scalar_subquery())
    .where(ArrayRow.max_running.is_not(None), ArrayRow.array_id.in_(
        select(JobRow.array_id).where(_QUEUED, JobRow.array_id.is_not(None)).distinct())))


def queued_for_pass(session: Session, cache: QueuedJobs | None = None) -> list[Job]:
    """The QUEUED jobs a pass may place: every one, except the tasks of a limited array
    beyond the first ``limit - running`` by index. Those are not read at all (a 100,000-task
    array would otherwise cost every pass 100,000 rows decoded); their reason is set here,
    one statement per array, touching only rows whose reason changes. Read through
    ``cache`` where the caller keeps one (the scheduler process does), else whole."""
    conn = session.connection()

    def read(what: QueueRead, **params: Any) -> list[Job]:
        if cache is not None:
            return cache.read(session, what, params)
        return [to_job(r) for r in conn.execute(what.whole, params)]  # type: ignore[arg-type]

    jobs = read(UNLIMITED)
    for array_id, limit, running in conn.execute(LIMITED_ARRAYS).all():
        room = max(limit - running, 0)
        tasks = read(ARRAY_TASKS, array_id=array_id, limit=room)
        jobs += tasks
        beyond = [JobRow.array_index > tasks[-1].spec.array_index] if tasks else []
        reason = limit_reason(array_id, limit)
        session.execute(update(JobRow).where(_QUEUED, JobRow.array_id == array_id, *beyond,
                                             JobRow.reason.is_distinct_from(reason))
                        .values(reason=reason).execution_options(synchronize_session=False))
    if cache is not None:
        cache.keep_only(jobs)
    return jobs


def still_stopping(session: Session, queued: Sequence[Job]) -> dict[str, dict[str, tuple[int, ...]]]:
    """Of ``queued``, the jobs whose current attempt still holds GPUs because its process is
    being stopped (a preempted attempt in its grace time, or a retried gang's part still
    running on a live node): job -> node -> GPU indices. Such a job is not placed again
    until they are freed: two attempts of it would run at once. Only jobs that can be in
    that state (preempted ones, gangs) are looked up."""
    ids = [j.job_id for j in queued if j.preempted_by or j.spec.nodes > 1]
    if not ids:
        return {}
    rows = session.execute(
        select(GpuAllocationRow.job_id, GpuAllocationRow.node, GpuAllocationRow.gpu_index)
        .join(JobRow, (JobRow.job_id == GpuAllocationRow.job_id)
              & (JobRow.attempt == GpuAllocationRow.attempt))
        .where(JobRow.job_id.in_(ids), JobRow.state == JobState.QUEUED)
        .order_by(GpuAllocationRow.job_id, GpuAllocationRow.node, GpuAllocationRow.gpu_index))
    found: dict[str, dict[str, tuple[int, ...]]] = {}
    for job_id, node, index in rows:
        nodes = found.setdefault(job_id, {})
        nodes[node] = (*nodes.get(node, ()), index)
    return found
