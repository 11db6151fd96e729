"""Accounting: each attempt's GPU-seconds, recorded when its GPUs are released, and the
sums people and the scheduler read from them (usage reports, fair share, the counter)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.orm import Session
from sqlalchemy.types import DateTime, Float, Integer, String

from overlay.fairshare import UsageRecord
from overlay.store.tables import AttemptUsageRow, GpuAllocationRow, JobRow, UsageTotalRow

GROUPS = ("account", "user", "gpu_model")

# Free the GPUs of a job (of one attempt, or of every attempt when :attempt is null) and, in
# the same statement, record each freed attempt's GPU-seconds and add them to usage_totals.
# An attempt is released once: its allocation rows are gone after.
RELEASE = text("""
WITH freed AS (
  DELETE FROM gpu_allocations
  WHERE job_id = :job_id AND (CAST(:attempt AS integer) IS NULL OR attempt = :attempt)
    AND (CAST(:node AS varchar) IS NULL OR node = :node)
  RETURNING node, gpu_index, job_id, attempt, allocated_at
), ended AS (
  SELECT coalesce(CAST(:now AS timestamptz), clock_timestamp()) AS at
), used AS (
  INSERT INTO attempt_usage (job_id, attempt, user_name, account, node, gpu_model, gpus,
                             started_at, ended_at, gpu_seconds)
  SELECT f.job_id, f.attempt, j.user_name, j.account, f.node, coalesce(min(g.name), ''), count(*),
         min(f.allocated_at), greatest(e.at, min(f.allocated_at)),
         count(*) * greatest(extract(epoch FROM e.at - min(f.allocated_at)), 0)
  FROM freed f JOIN jobs j ON j.job_id = f.job_id CROSS JOIN ended e
  LEFT JOIN gpus g ON g.node = f.node AND g.index = f.gpu_index
  GROUP BY f.job_id, f.attempt, f.node, j.user_name, j.account, e.at
  ON CONFLICT (job_id, attempt, node) DO NOTHING
  RETURNING account, user_name, gpu_seconds
)
INSERT INTO usage_totals (account, user_name, gpu_seconds)
SELECT account, user_name, sum(gpu_seconds) FROM used GROUP BY account, user_name
ON CONFLICT (account, user_name) DO UPDATE SET gpu_seconds = usage_totals.gpu_seconds + excluded.gpu_seconds
""").bindparams(bindparam("job_id", type_=String()), bindparam("attempt", type_=Integer()),
                bindparam("node", type_=String()),
                bindparam("now", type_=DateTime(timezone=True)))


def release(session: Session, job_id: str, *, attempt: int | None = None, node: str | None = None,
            now: datetime | None = None) -> None:
    """Free the job's GPUs (those of ``attempt`` and of ``node`` if given: one part of a gang
    job) and record what each freed attempt used, ended at ``now`` (Postgres's clock unless given)."""
    session.execute(RELEASE, {"job_id": job_id, "attempt": attempt, "node": node, "now": now})


@dataclass(frozen=True, kw_only=True)
class UsageRow:
    """GPU-seconds of one group (an account, a user or a GPU model) in a period."""

    group: str
    gpu_seconds: float
    attempts: int

    @property
    def gpu_hours(self) -> float:
        return self.gpu_seconds / 3600.0


def report(session: Session, *, group_by: str, since: datetime | None = None,
           until: datetime | None = None) -> list[UsageRow]:
    """Recorded GPU-seconds per ``group_by`` (one of GROUPS), counting only the part of each
    attempt inside [since, until). Largest first. Raises ValueError for another group."""
    if group_by not in GROUPS:
        raise ValueError(f"group_by must be one of {', '.join(GROUPS)}")
    column = {"account": AttemptUsageRow.account, "user": AttemptUsageRow.user_name,
              "gpu_model": AttemptUsageRow.gpu_model}[group_by]
    start: object = AttemptUsageRow.started_at
    end: object = AttemptUsageRow.ended_at
    where = []
    if since is not None:
        start = func.greatest(AttemptUsageRow.started_at, since)
        where.append(AttemptUsageRow.ended_at > since)
    if until is not None:
        end = func.least(AttemptUsageRow.ended_at, until)
        where.append(AttemptUsageRow.started_at < until)
    seconds = AttemptUsageRow.gpus * func.greatest(func.extract("epoch", end - start), 0)  # type: ignore[operator]
    total = func.sum(seconds)
    rows = session.execute(select(column, total, func.count()).where(*where).group_by(column)
                           .order_by(total.desc(), column))
    return [UsageRow(group=g, gpu_seconds=float(s or 0.0), attempts=n) for g, s, n in rows]


def totals(session: Session) -> list[tuple[str, str, float]]:
    """(account, user, GPU-seconds) of every ended attempt, from the running totals."""
    rows = session.execute(select(UsageTotalRow.account, UsageTotalRow.user_name, UsageTotalRow.gpu_seconds)
                           .order_by(UsageTotalRow.account, UsageTotalRow.user_name))
    return [(a, u, float(s)) for a, u, s in rows]


# overlay.fairshare.decayed_gpu_seconds summed in Postgres per (account, user): each
# attempt's GPUs × ∫ 2^(-age/half-life) over its time before :now. One row per user comes
# back instead of one per attempt (100,000 attempts: 2.2 s folded in Python).
DECAYED = text("""
SELECT account, user_name,
       sum(greatest(gpus * :scale * (
             power(2.0::float8, -date_part('epoch', :now - least(ended_at, :now)) / :half_life)
           - power(2.0::float8, -date_part('epoch', :now - started_at) / :half_life)), 0))
FROM attempt_usage WHERE ended_at > :since
GROUP BY account, user_name
""").bindparams(bindparam("now", type_=DateTime(timezone=True)),
                bindparam("since", type_=DateTime(timezone=True)),
                bindparam("half_life", type_=Float()), bindparam("scale", type_=Float()))


def decayed_ended(session: Session, *, now: datetime, horizon: timedelta,
                  half_life_s: float) -> dict[tuple[str, str], float]:
    """Decayed GPU-seconds at ``now`` per (account, user) of the attempts that ended within
    ``horizon`` (older ones weigh next to nothing), as ``overlay.fairshare.fold_usage``
    would count them. ``half_life_s`` must be finite and > 0."""
    rows = session.execute(DECAYED, {"now": now, "since": now - horizon, "half_life": half_life_s,
                                     "scale": half_life_s / math.log(2)})
    return {(a, u): float(v) for a, u, v in rows}


def ended_records(session: Session, *, now: datetime, horizon: timedelta) -> list[UsageRecord]:
    """The attempts that ended within ``horizon`` of ``now``, as fair share's records."""
    ended = session.execute(
        select(AttemptUsageRow.account, AttemptUsageRow.user_name, AttemptUsageRow.gpus,
               AttemptUsageRow.started_at, AttemptUsageRow.ended_at)
        .where(AttemptUsageRow.ended_at > now - horizon))
    return [UsageRecord(account=a, user=u, gpus=g, start=s, end=e) for a, u, g, s, e in ended]


HOLDING = (select(JobRow.account, JobRow.user_name, func.count(), func.min(GpuAllocationRow.allocated_at))
           .join(JobRow, JobRow.job_id == GpuAllocationRow.job_id)
           .group_by(GpuAllocationRow.job_id, GpuAllocationRow.attempt, JobRow.account, JobRow.user_name))


def holding_records(session: Session) -> list[UsageRecord]:
    """The attempts holding GPUs now, as fair share's records (no end yet)."""
    return [UsageRecord(account=a, user=u, gpus=n, start=s)
            for a, u, n, s in session.connection().execute(HOLDING)]
