"""Job dependencies in Postgres: recording them at submit (refusing unknown ids and
cycles), and judging the queued jobs that have some before a pass (indexed reads of
their targets only, never the history)."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, insert, select, text
from sqlalchemy.orm import Session

from overlay.dependencies import Dependency, Kind, Never, Outcome, Wait, find_cycle, judge
from overlay.errors import InvalidField
from overlay.states import JobState
from overlay.store import jobs as job_store
from overlay.store.tables import ArrayRow, DependencyRow, JobRow

log = logging.getLogger(__name__)
FIELD = "depends_on"


def check(session: Session, new: Collection[str], deps: Sequence[Dependency]) -> None:
    """Refuse ``deps`` of the jobs ``new`` (one job, or an array's id and task ids): raise
    InvalidField naming the ids no job or array has, or the cycle they would close."""
    targets = sorted({d.target for d in deps})
    if not targets:
        return
    cycle = find_cycle(new, targets, lambda ids: depends_of(session, ids))
    if cycle is not None:
        loop = " -> ".join([cycle[-1], *cycle])  # the new job, what it waits on, ..., itself
        raise InvalidField(FIELD, f"a cycle: {loop}", cycle=cycle)
    known = set(session.scalars(select(JobRow.job_id).where(JobRow.job_id.in_(targets))))
    known |= set(session.scalars(select(ArrayRow.array_id).where(ArrayRow.array_id.in_(targets))))
    unknown = [t for t in targets if t not in known]
    if unknown:
        raise InvalidField(FIELD, f"no job or array {', '.join(unknown)}", unknown=unknown)


def depends_of(session: Session, ids: Sequence[str]) -> dict[str, list[str]]:
    """What each of ``ids`` waits on: a job its own dependencies, an array its tasks'."""
    out: dict[str, list[str]] = defaultdict(list)
    for job_id, target in session.execute(select(DependencyRow.job_id, DependencyRow.target)
                                          .where(DependencyRow.job_id.in_(ids))):
        out[job_id].append(target)
    arrays = (select(JobRow.array_id, DependencyRow.target).distinct()
              .join(DependencyRow, DependencyRow.job_id == JobRow.job_id).where(JobRow.array_id.in_(ids)))
    for array_id, target in session.execute(arrays):
        out[array_id].append(target)
    return out


def add(session: Session, job_id: str, deps: Sequence[Dependency]) -> None:
    """Record ``job_id``'s dependencies (checked already)."""
    if deps:
        session.execute(insert(DependencyRow), [dict(job_id=job_id, kind=d.kind.value, target=d.target)
                                                for d in deps])


def add_to_array(session: Session, array_id: str, deps: Sequence[Dependency]) -> None:
    """Give every task of the array ``deps``, in one statement."""
    if deps:
        session.execute(
            text("INSERT INTO job_dependencies (job_id, kind, target) "
                 "SELECT j.job_id, d.kind, d.target FROM jobs j, "
                 "unnest(CAST(:kinds AS varchar[]), CAST(:targets AS varchar[])) AS d(kind, target) "
                 "WHERE j.array_id = :a"),
            {"a": array_id, "kinds": [d.kind.value for d in deps], "targets": [d.target for d in deps]},
        )


def of_job(session: Session, job_id: str) -> dict[str, list[str]]:
    """``job_id``'s dependencies as the API shows them: kind -> targets."""
    out: dict[str, list[str]] = defaultdict(list)
    rows = session.execute(select(DependencyRow.kind, DependencyRow.target)
                           .where(DependencyRow.job_id == job_id).order_by(DependencyRow.target))
    for kind, target in rows:
        out[kind].append(target)
    return dict(out)


@dataclass(frozen=True, kw_only=True)
class Judged:
    """What dependencies decided before a pass: jobs that wait (id -> reason) and jobs
    cancelled because a dependency can no longer be met."""

    waiting: dict[str, str] = field(default_factory=dict)
    cancelled: list[str] = field(default_factory=list)


QUEUED_DEPENDENCIES = (
    select(DependencyRow.job_id, DependencyRow.kind, DependencyRow.target)
    .join(JobRow, JobRow.job_id == DependencyRow.job_id)
    .where(JobRow.state == JobState.QUEUED)
)


def settle(session: Session, *, now: datetime) -> Judged:
    """Judge every QUEUED job that has dependencies; cancel those that can never run, then
    judge again, so a chain of dependents ends in one pass (Slurm's DependencyNeverSatisfied,
    transitively)."""
    waiting: dict[str, str] = {}
    cancelled: list[str] = []
    while True:
        deps: dict[str, list[Dependency]] = defaultdict(list)
        for job_id, kind, target in session.connection().execute(QUEUED_DEPENDENCIES):
            deps[job_id].append(Dependency(kind=Kind(kind), target=target))
        if not deps:
            return Judged(waiting=waiting, cancelled=cancelled)
        outcomes = _outcomes(session, {d.target for ds in deps.values() for d in ds})
        waiting, ended = {}, []
        for job_id, ds in deps.items():
            verdict = judge(ds, outcomes)
            if isinstance(verdict, Wait):
                waiting[job_id] = verdict.reason
            elif isinstance(verdict, Never):
                job_store.transition(session, job_id, JobState.CANCELLED, now=now, reason=verdict.reason)
                log.info("job %s: %s", job_id, verdict.reason)
                ended.append(job_id)
        if not ended:
            return Judged(waiting=waiting, cancelled=cancelled)
        cancelled.extend(ended)


def _outcomes(session: Session, targets: Collection[str]) -> Mapping[str, Outcome]:
    """Each target's outcome: a job's state, or an array's tasks' counts per state, read by
    primary key and by the (array_id, status) index."""
    ids = sorted(targets)
    counts: dict[str, dict[JobState, int]] = defaultdict(dict)
    for job_id, state in session.execute(select(JobRow.job_id, JobRow.state).where(JobRow.job_id.in_(ids))):
        counts[job_id][state] = 1
    arrays = set(session.scalars(select(ArrayRow.array_id).where(ArrayRow.array_id.in_(ids)))) - counts.keys()
    if arrays:
        for array_id, state, n in session.execute(
                select(JobRow.array_id, JobRow.state, func.count())
                .where(JobRow.array_id.in_(sorted(arrays))).group_by(JobRow.array_id, JobRow.state)):
            counts[array_id][state] = n
        for array_id in arrays:
            counts.setdefault(array_id, {})
    return {t: Outcome.of(c) for t, c in counts.items()}
