"""A pass's placements written together: a handful of statements for all of them, where
``jobs.place`` takes seven round trips per job (lock, savepoint, allocations, release,
update, event, notify). On a busy Postgres each round trip is milliseconds: a pass of
thousands of placements spent most of its time there (docs/performance.md)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ARRAY, Boolean, String, bindparam, delete, select, text, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from overlay.errors import GpuTaken
from overlay.model import Job, Placement
from overlay.states import JobState
from overlay.store.jobs import JOB_COLUMNS, NOTIFY_CHANNEL, to_job
from overlay.store.session import resolve_now
from overlay.store.tables import GpuAllocationRow, JobRow

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


MOVE = text(f"""
UPDATE {JobRow.__tablename__} AS j
SET status = 'PLACED', attempt = j.attempt + 1, node = v.node, gpu_indices = CAST(v.gpus AS jsonb),
    placed_at = :now, started_at = NULL, reason = NULL, preempted_by = NULL, preempted_at = NULL,
    borrowed = v.borrowed
FROM unnest(CAST(:ids AS varchar[]), CAST(:nodes AS varchar[]), CAST(:borrowed AS boolean[]),
            CAST(:gpus AS text[])) AS v(job_id, node, borrowed, gpus)
WHERE j.job_id = v.job_id
""").bindparams(bindparam("ids", type_=ARRAY(String)), bindparam("nodes", type_=ARRAY(String)),
                bindparam("borrowed", type_=ARRAY(Boolean)), bindparam("gpus", type_=ARRAY(String)))

EVENTS = text("""
INSERT INTO job_events (job_id, at, from_state, to_state, attempt, node, gpu_indices, reason)
SELECT job_id, :now, 'QUEUED', 'PLACED', attempt, node, gpu_indices, NULL FROM jobs
WHERE job_id = ANY(CAST(:ids AS varchar[]))
""").bindparams(bindparam("ids", type_=ARRAY(String)))

NOTIFY = text("SELECT pg_notify(:channel, job_id || ' PLACED') FROM unnest(CAST(:ids AS varchar[])) AS job_id"
              ).bindparams(bindparam("ids", type_=ARRAY(String)))


def place_many(session: Session, wanted: Sequence[Wanted], *, now: datetime | None = None) -> Placed:
    """Record one-node placements together, each as ``jobs.place`` would: its GPUs held
    (the allocations' primary key is the last word on double-booking: a job one of whose
    GPUs is held by another gets none and is refused), QUEUED -> PLACED with a new attempt,
    an event and a NOTIFY. A job no longer QUEUED (cancelled since the pass read it) is
    refused too; the rest are placed. Rows are locked in job_id order."""
    if not wanted:
        return Placed(jobs=[], refused={})
    now = resolve_now(session, now)
    ids = sorted({w.job_id for w in wanted})
    attempts: dict[str, int] = {job_id: attempt for job_id, attempt in session.execute(
        select(JobRow.job_id, JobRow.attempt)
        .where(JobRow.job_id.in_(ids), JobRow.state == JobState.QUEUED)
        .order_by(JobRow.job_id).with_for_update())}
    refused = {w.job_id: "it is no longer QUEUED" for w in wanted if w.job_id not in attempts}
    wanted = [w for w in wanted if w.job_id in attempts]
    refused |= _hold_gpus(session, wanted, attempts, now=now)
    wanted = [w for w in wanted if w.job_id not in refused]
    if not wanted:
        return Placed(jobs=[], refused=refused)
    session.execute(MOVE, {"ids": [w.job_id for w in wanted], "nodes": [w.placement.node for w in wanted],
                           "borrowed": [w.borrowed for w in wanted],
                           "gpus": [json.dumps(list(w.placement.gpus)) for w in wanted], "now": now})
    placed_ids = [w.job_id for w in wanted]
    session.execute(EVENTS, {"ids": placed_ids, "now": now})
    session.execute(NOTIFY, {"channel": NOTIFY_CHANNEL, "ids": placed_ids})
    rows = session.execute(JOB_COLUMNS.where(JobRow.job_id.in_(placed_ids)))
    by_id = {r.job_id: to_job(r) for r in rows}  # type: ignore[arg-type]
    return Placed(jobs=[by_id[j] for j in placed_ids], refused=refused)


def _hold_gpus(session: Session, wanted: Sequence[Wanted], attempts: dict[str, int], *,
               now: datetime) -> dict[str, str]:
    """Insert every wanted GPU's allocation, skipping those held already; a job that did
    not get all of its GPUs gives back those it got. Which jobs were refused, and why."""
    rows = [dict(node=w.placement.node, gpu_index=i, job_id=w.job_id, attempt=attempts[w.job_id] + 1,
                 allocated_at=now) for w in wanted for i in w.placement.gpus]
    got: Counter[str] = Counter()
    for start in range(0, len(rows), CHUNK):
        inserted = session.execute(
            pg_insert(GpuAllocationRow).values(rows[start:start + CHUNK]).on_conflict_do_nothing()
            .returning(GpuAllocationRow.job_id))
        got.update(job_id for (job_id,) in inserted)
    short = [w for w in wanted if got[w.job_id] != len(w.placement.gpus)]
    if not short:
        return {}
    session.execute(delete(GpuAllocationRow).where(
        tuple_(GpuAllocationRow.job_id, GpuAllocationRow.attempt).in_(
            [(w.job_id, attempts[w.job_id] + 1) for w in short])))
    return {w.job_id: GpuTaken(node=w.placement.node, gpus=w.placement.gpus).message for w in short}
