"""What keeps queued jobs out of a pass before placement: dependencies not yet met (and
never to be met: those jobs are cancelled), arrays at their %N limit, and an attempt that
is still being stopped on its node."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import exists, func, or_, select, update
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


def queued_for_pass(session: Session) -> list[Job]:
    """The QUEUED jobs a pass may place: every one, except the tasks of a limited array
    beyond the first ``limit - running`` by index. Those are not read at all (a 100,000-task
    array would otherwise cost every pass 100,000 rows decoded); their reason is set here,
    one statement per array, touching only rows whose reason changes."""
    queued = JobRow.state == JobState.QUEUED
    limited = exists().where(ArrayRow.array_id == JobRow.array_id, ArrayRow.max_running.is_not(None))
    jobs = [to_job(r) for r in session.execute(  # type: ignore[arg-type]
        JOB_COLUMNS.where(queued, or_(JobRow.array_id.is_(None), ~limited)))]
    waiting_arrays = select(JobRow.array_id).where(queued, JobRow.array_id.is_not(None)).distinct()
    active = (select(func.count())
              .where(JobRow.array_id == ArrayRow.array_id, JobRow.state.in_(arrays.ACTIVE)).scalar_subquery())
    for array_id, limit, running in session.execute(
            select(ArrayRow.array_id, ArrayRow.max_running, active)
            .where(ArrayRow.max_running.is_not(None), ArrayRow.array_id.in_(waiting_arrays))):
        room = max(limit - running, 0)
        tasks = [to_job(r) for r in session.execute(  # type: ignore[arg-type]
            JOB_COLUMNS.where(queued, JobRow.array_id == array_id).order_by(JobRow.array_index).limit(room))]
        jobs += tasks
        beyond = [JobRow.array_index > tasks[-1].spec.array_index] if tasks else []
        reason = limit_reason(array_id, limit)
        session.execute(update(JobRow).where(queued, JobRow.array_id == array_id, *beyond,
                                             JobRow.reason.is_distinct_from(reason))
                        .values(reason=reason).execution_options(synchronize_session=False))
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
