"""GPU samples in Postgres: each job's per-GPU folds (job_gpu_usage), its idleness
(job_idle), and the reads the API's efficiency views need."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from overlay.efficiency import Efficiency, GpuUsage, JobUsage, summarize
from overlay.states import JobState
from overlay.store.session import resolve_now
from overlay.store.tables import JobEventRow, JobGpuUsageRow, JobIdleRow, JobRow

FOLDED = ("samples", "util_sum", "util_max", "memory_peak_mb", "memory_total_mb", "energy_j", "seconds",
          "idle_seconds", "below_since")


def to_usage(row: JobGpuUsageRow) -> GpuUsage:
    return GpuUsage(job_id=row.job_id, gpu_index=row.gpu_index,
                    **{name: getattr(row, name) for name in FOLDED})


def usages(session: Session, job_ids: Iterable[str], *,
           lock: bool = False) -> dict[tuple[str, int], GpuUsage]:
    """The folds of these jobs' GPUs by (job_id, gpu_index); ``lock`` holds them for update."""
    query = select(JobGpuUsageRow).where(JobGpuUsageRow.job_id.in_(list(job_ids)))
    if lock:
        query = query.with_for_update()
    return {(r.job_id, r.gpu_index): to_usage(r) for r in session.scalars(query)}


def save(session: Session, folds: Sequence[GpuUsage], *, now: datetime) -> None:
    """Write these folds (one statement for the whole round); a job deleted meanwhile is skipped."""
    if not folds:
        return
    live = set(session.scalars(select(JobRow.job_id).where(JobRow.job_id.in_({u.job_id for u in folds}))))
    rows = [{"job_id": u.job_id, "gpu_index": u.gpu_index, "updated_at": now,
             **{name: getattr(u, name) for name in FOLDED}} for u in folds if u.job_id in live]
    if not rows:
        return
    statement = pg_insert(JobGpuUsageRow).values(rows)
    session.execute(statement.on_conflict_do_update(
        index_elements=["job_id", "gpu_index"],
        set_={name: statement.excluded[name] for name in (*FOLDED, "updated_at")},
    ))


@dataclass(frozen=True, kw_only=True)
class RunningJob:
    """What the sampler needs of a job running on its node."""

    job_id: str
    attempt: int
    user: str
    account: str
    fake_util: str
    idle_ok: bool
    idle_since: datetime | None


def running(session: Session, job_ids: Iterable[str]) -> dict[str, RunningJob]:
    """Those of ``job_ids`` that are RUNNING, with their idleness."""
    query = (select(JobRow.job_id, JobRow.attempt, JobRow.user_name, JobRow.account, JobRow.env,
                    JobIdleRow.idle_ok, JobIdleRow.idle_since)
             .outerjoin(JobIdleRow, JobIdleRow.job_id == JobRow.job_id)
             .where(JobRow.job_id.in_(list(job_ids)), JobRow.state == JobState.RUNNING))
    return {r.job_id: RunningJob(job_id=r.job_id, attempt=r.attempt, user=r.user_name, account=r.account,
                                 fake_util=str((r.env or {}).get("OVERLAY_FAKE_UTIL", "")),
                                 idle_ok=bool(r.idle_ok), idle_since=r.idle_since)
            for r in session.execute(query)}


def allow_idle(session: Session, job_id: str) -> None:
    """Record that the job was submitted ``idle_ok``: the idle policy never cancels it."""
    statement = pg_insert(JobIdleRow).values(job_id=job_id, idle_ok=True, idle_since=None)
    session.execute(statement.on_conflict_do_update(index_elements=["job_id"], set_={"idle_ok": True}))


def mark_idle(session: Session, job_id: str, since: datetime | None, *, attempt: int, node: str,
              reason: str | None = None, now: datetime | None = None) -> None:
    """Set (or clear, ``since`` None) the job's idle_since; ``reason`` adds it as an event."""
    statement = pg_insert(JobIdleRow).values(job_id=job_id, idle_ok=False, idle_since=since)
    session.execute(statement.on_conflict_do_update(index_elements=["job_id"], set_={"idle_since": since}))
    if reason:
        session.execute(insert(JobEventRow).values(
            job_id=job_id, at=resolve_now(session, now), from_state=JobState.RUNNING.value,
            to_state=JobState.RUNNING.value, attempt=attempt, node=node, gpu_indices=[], reason=reason))


def clear_idle_of_ended(session: Session, job_ids: Iterable[str]) -> None:
    """An ended job is not idle any more."""
    session.execute(update(JobIdleRow).where(JobIdleRow.job_id.in_(list(job_ids)))
                    .values(idle_since=None))


# What a job's API view reads on every GET, built once (run on the session's connection).
ONE_JOB_USAGE = (select(JobGpuUsageRow.__table__).where(JobGpuUsageRow.__table__.c.job_id == bindparam("id"))
                 .order_by(JobGpuUsageRow.__table__.c.gpu_index))
IDLE_SINCE = select(JobIdleRow.idle_since).where(JobIdleRow.job_id == bindparam("id"))


def efficiency(session: Session, job_id: str, *, gpu_memory_mb_asked: int | None = None) -> Efficiency | None:
    """The job's efficiency so far; None when nothing was sampled. ``gpu_memory_mb_asked``:
    what the job asked for, where the caller has read the job already."""
    if gpu_memory_mb_asked is None:
        gpu_memory_mb_asked = session.scalar(select(JobRow.gpu_memory_mb).where(JobRow.job_id == job_id))
    folds = [to_usage(r) for r in session.connection().execute(ONE_JOB_USAGE, {"id": job_id})]  # type: ignore[arg-type]
    return summarize(folds, gpu_memory_mb_asked=gpu_memory_mb_asked or None)


def idle_since(session: Session, job_id: str) -> datetime | None:
    return session.connection().execute(IDLE_SINCE, {"id": job_id}).scalar()  # type: ignore[no-any-return]


@dataclass(frozen=True, kw_only=True)
class IdleJob:
    job_id: str
    user: str
    account: str
    node: str | None
    gpus: list[int]
    idle_since: datetime


def idle_jobs(session: Session) -> list[IdleJob]:
    """The running jobs marked idle, longest idle first."""
    query = (select(JobRow.job_id, JobRow.user_name, JobRow.account, JobRow.node, JobRow.gpu_indices,
                    JobIdleRow.idle_since)
             .join(JobIdleRow, JobIdleRow.job_id == JobRow.job_id)
             .where(JobRow.state == JobState.RUNNING, JobIdleRow.idle_since.is_not(None))
             .order_by(JobIdleRow.idle_since))
    return [IdleJob(job_id=r.job_id, user=r.user_name, account=r.account, node=r.node,
                    gpus=list(r.gpu_indices or []), idle_since=r.idle_since) for r in session.execute(query)]


def sampled_jobs(session: Session, *, since: datetime, user: str | None = None,
                 account: str | None = None) -> list[JobUsage]:
    """Every job sampled since ``since`` (its folds last written then or later)."""
    query = (select(JobRow.job_id, JobRow.user_name, JobRow.account, JobRow.gpu_memory_mb)
             .where(JobRow.job_id.in_(select(JobGpuUsageRow.job_id)
                                      .where(JobGpuUsageRow.updated_at >= since))))
    if user:
        query = query.where(JobRow.user_name == user)
    if account:
        query = query.where(JobRow.account == account)
    jobs = list(session.execute(query.order_by(JobRow.job_id)))
    folds = usages(session, [j.job_id for j in jobs])
    by_job: dict[str, list[GpuUsage]] = {}
    for (job_id, _), usage in sorted(folds.items()):
        by_job.setdefault(job_id, []).append(usage)
    return [JobUsage(job_id=j.job_id, user=j.user_name, account=j.account, gpu_memory_mb=j.gpu_memory_mb,
                     usages=tuple(by_job.get(j.job_id, []))) for j in jobs]
