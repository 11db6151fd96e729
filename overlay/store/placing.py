"""A pass's placements written together: three statements for all of them (the jobs'
locked read, their GPUs' allocations, and the move to PLACED with each job's event and
NOTIFY, returning the jobs), each built once, where ``jobs.place`` takes seven round
trips per job (lock, savepoint, allocations, release, update, event, notify). On a busy
Postgres each round trip is milliseconds: a pass of thousands of placements spent most
of its time there, and a pass of one (a GPU's end letting the next job in) spent a
quarter of its Python building the statements again (docs/performance.md)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ARRAY, Boolean, DateTime, Integer, String, bindparam, column, delete, text, tuple_
from sqlalchemy.orm import Session

from overlay.errors import GpuTaken
from overlay.model import Job, Placement
from overlay.store.jobs import NOTIFY_CHANNEL, to_job
from overlay.store.session import resolve_now
from overlay.store.tables import GpuAllocationRow, JobEventRow, JobRow

# Rows per INSERT of allocations (a statement's parameters stay well under Postgres's limit).
CHUNK = 2000


@dataclass(frozen=True, kw_only=True)
class Wanted:
    """One placement the pass decided: ``job_id`` on ``placement`` (``borrowed``: beyond quota)."""

    job_id: str
    placement: Placement
    borrowed: bool = False


@dataclass(frozen=True, kw_only=True)
class Placed:
    """What was written: the jobs now PLACED, and why each of the others was not."""

    jobs: list[Job]
    refused: dict[str, str]


_JOBS = JobRow.__table__
# Every column of a job, labelled by attribute as ``to_job`` reads them (jobs.JOB_COLUMNS).
_ATTRS = [(a.key, _JOBS.c[a.columns[0].name]) for a in JobRow.__mapper__.column_attrs]

# A job's locked read before its placement, built once.
LOCK = text(f"""
SELECT job_id, attempt FROM {JobRow.__tablename__}
WHERE job_id = ANY(CAST(:ids AS varchar[])) AND status = 'QUEUED'
ORDER BY job_id FOR UPDATE
""").bindparams(bindparam("ids", type_=ARRAY(String)))

# The GPUs' allocations, those held already skipped: who got which.
HOLD = text(f"""
INSERT INTO {GpuAllocationRow.__tablename__} (node, gpu_index, job_id, attempt, allocated_at)
SELECT node, gpu_index, job_id, attempt, :now
FROM unnest(CAST(:nodes AS varchar[]), CAST(:gpus AS integer[]), CAST(:ids AS varchar[]),
            CAST(:attempts AS integer[])) AS v(node, gpu_index, job_id, attempt)
ON CONFLICT DO NOTHING
RETURNING job_id
""").bindparams(bindparam("nodes", type_=ARRAY(String)), bindparam("gpus", type_=ARRAY(Integer)),
                bindparam("ids", type_=ARRAY(String)), bindparam("attempts", type_=ARRAY(Integer)))

# QUEUED -> PLACED with a new attempt, each job's event and its NOTIFY, and the jobs as
# they are now: one statement for all of a pass's placements.
MOVE = text(f"""
WITH moved AS (
  UPDATE {JobRow.__tablename__} AS j
  SET status = 'PLACED', attempt = j.attempt + 1, node = v.node, gpu_indices = CAST(v.gpus AS jsonb),
      placed_at = :now, started_at = NULL, reason = NULL, preempted_by = NULL, preempted_at = NULL,
      borrowed = v.borrowed
  FROM unnest(CAST(:ids AS varchar[]), CAST(:nodes AS varchar[]), CAST(:borrowed AS boolean[]),
              CAST(:gpus AS text[])) AS v(job_id, node, borrowed, gpus)
  WHERE j.job_id = v.job_id
  RETURNING j.*
), events AS (
  INSERT INTO {JobEventRow.__tablename__}
    (job_id, at, from_state, to_state, attempt, node, gpu_indices, reason)
  SELECT job_id, :now, 'QUEUED', 'PLACED', attempt, node, gpu_indices, NULL FROM moved
), notified AS (
  SELECT pg_notify('{NOTIFY_CHANNEL}', job_id || ' PLACED') FROM moved
)
SELECT {", ".join(f"moved.{c.name} AS {key}" for key, c in _ATTRS)}
FROM moved, (SELECT count(*) FROM notified) AS n
""").bindparams(bindparam("ids", type_=ARRAY(String)), bindparam("nodes", type_=ARRAY(String)),
                bindparam("borrowed", type_=ARRAY(Boolean)), bindparam("gpus", type_=ARRAY(String)),
                bindparam("now", type_=DateTime(timezone=True))
                ).columns(*(column(key, c.type) for key, c in _ATTRS))


def place_many(session: Session, wanted: Sequence[Wanted], *, now: datetime | None = None) -> Placed:
    """Record one-node placements together, each as ``jobs.place`` would: its GPUs held
    (the allocations' primary key is the last word on double-booking: a job one of whose
    GPUs is held by another gets none and is refused), QUEUED -> PLACED with a new attempt,
    an event and a NOTIFY. A job no longer QUEUED (cancelled since the pass read it) is
    refused too; the rest are placed. Rows are locked in job_id order."""
    if not wanted:
        return Placed(jobs=[], refused={})
    now = resolve_now(session, now)
    conn = session.connection()
    ids = sorted({w.job_id for w in wanted})
    attempts: dict[str, int] = {job_id: attempt for job_id, attempt in conn.execute(LOCK, {"ids": ids})}
    refused = {w.job_id: "it is no longer QUEUED" for w in wanted if w.job_id not in attempts}
    wanted = [w for w in wanted if w.job_id in attempts]
    refused |= _hold_gpus(session, wanted, attempts, now=now)
    wanted = [w for w in wanted if w.job_id not in refused]
    if not wanted:
        return Placed(jobs=[], refused=refused)
    rows = conn.execute(MOVE, {"ids": [w.job_id for w in wanted], "nodes": [w.placement.node for w in wanted],
                               "borrowed": [w.borrowed for w in wanted],
                               "gpus": [json.dumps(list(w.placement.gpus)) for w in wanted], "now": now})
    by_id = {r.job_id: to_job(r) for r in rows}  # type: ignore[arg-type]
    return Placed(jobs=[by_id[w.job_id] for w in wanted], refused=refused)


def _hold_gpus(session: Session, wanted: Sequence[Wanted], attempts: dict[str, int], *,
               now: datetime) -> dict[str, str]:
    """Insert every wanted GPU's allocation, skipping those held already; a job that did
    not get all of its GPUs gives back those it got. Which jobs were refused, and why."""
    holds = [(w.placement.node, i, w.job_id, attempts[w.job_id] + 1)
             for w in wanted for i in w.placement.gpus]
    got: Counter[str] = Counter()
    for start in range(0, len(holds), CHUNK):
        nodes, gpus, ids, numbers = zip(*holds[start:start + CHUNK], strict=True)
        params = {"nodes": list(nodes), "gpus": list(gpus), "ids": list(ids), "attempts": list(numbers),
                  "now": now}
        inserted = session.connection().execute(HOLD, params)
        got.update(job_id for (job_id,) in inserted)
    short = [w for w in wanted if got[w.job_id] != len(w.placement.gpus)]
    if not short:
        return {}
    session.execute(delete(GpuAllocationRow).where(
        tuple_(GpuAllocationRow.job_id, GpuAllocationRow.attempt).in_(
            [(w.job_id, attempts[w.job_id] + 1) for w in short])))
    return {w.job_id: GpuTaken(node=w.placement.node, gpus=w.placement.gpus).message for w in short}
