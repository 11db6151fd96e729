"""An attempt's start and end as its agent records them, in Core statements built once.

An agent records two transitions per job, and they were the largest share of its Python
per job (docs/performance.md): the ORM's locked load into its identity map, its unit of
work's UPDATE, and two statements built again on every call for the event and its
NOTIFY. Here each transition is

- a locked read of the job's row (plain columns, no ORM object),
- one UPDATE that takes Postgres's clock itself (``coalesce(:now, clock_timestamp())``,
  RETURNING it: no separate clock statement),
- at the end, the release of the attempt's GPUs with its usage (overlay/store/usage.py),
- the event and its NOTIFY in one statement (``jobs.record_event``),

every statement prebuilt with bind parameters and run on the session's connection, so
neither the ORM nor SQLAlchemy's statement construction runs per job. The rules are the
same as everywhere (``check_transition``); a gang job's parts keep their own path
(overlay/store/gangs.py). Nothing here may run in a session that holds an ORM object of
the same job: that object would not see these writes (the agent's transactions hold none).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Table, bindparam, func, update
from sqlalchemy.orm import Session
from sqlalchemy.types import DateTime

from overlay.errors import JobNotFound
from overlay.model import Job
from overlay.states import JobState, check_transition
from overlay.store.jobs import JOB_BY_ID, Ending, _stale, record_event, to_job
from overlay.store.tables import JobRow
from overlay.store.usage import RELEASE

JOBS: Table = JobRow.__table__  # type: ignore[assignment]  # a declarative class's table is a Table
# Every column of the job (labelled so that ``to_job`` reads it), locked for the transaction.
LOCKED = JOB_BY_ID.with_for_update()
_NOW = func.coalesce(bindparam("now", type_=DateTime(timezone=True)), func.clock_timestamp())
START = (update(JOBS).where(JOBS.c.job_id == bindparam("id"))
         .values(status=JobState.RUNNING, reason=None, started_at=_NOW).returning(JOBS.c.started_at))
END = (update(JOBS).where(JOBS.c.job_id == bindparam("id"))
       .values(status=bindparam("state"), reason=bindparam("why"), finished_at=_NOW,
               exit_code=bindparam("code"), log_tail=bindparam("tail"))
       .returning(JOBS.c.finished_at))
# The end of an attempt whose job was cancelled while it ran: only its exit code and output.
END_CANCELLED = (update(JOBS).where(JOBS.c.job_id == bindparam("id"))
                 .values(exit_code=bindparam("code"), log_tail=bindparam("tail")))


def lock(session: Session, job_id: str) -> Row[Any]:
    """The job's row, locked FOR UPDATE for this transaction; raise JobNotFound."""
    row = session.connection().execute(LOCKED, {"id": job_id}).one_or_none()
    if row is None:
        raise JobNotFound(job_id)
    return row


def start(session: Session, row: Row[Any], *, attempt: int, node: str, now: datetime | None = None) -> Job:
    """PLACED -> RUNNING for a one-node job's row read by ``lock``, if it is PLACED for this
    attempt on this node. Raises StaleAttempt otherwise (a stale or redelivered message:
    nothing changes)."""
    if (row.state, row.attempt, row.node) != (JobState.PLACED, attempt, node):
        raise _stale(row, attempt)  # type: ignore[arg-type]  # a Row has the fields it reads
    check_transition(row.job_id, row.state, JobState.RUNNING)
    at = session.connection().execute(START, {"id": row.job_id, "now": now}).scalar_one()
    record_event(session, row.job_id, row.state, JobState.RUNNING, now=at, attempt=attempt,
                 node=row.node, gpus=row.gpu_indices)
    return replace(to_job(row), state=JobState.RUNNING, reason=None, started_at=at)  # type: ignore[arg-type]


def finish(session: Session, job_id: str, *, attempt: int, target: JobState, reason: str | None,
           ending: Ending, now: datetime | None = None) -> Job:
    """Record how a one-node job's attempt ended and free its GPUs; the job as it is now.

    A job cancelled while running is already CANCELLED: the end only adds the exit code
    and output. Raises StaleAttempt, recording nothing, when the attempt is no longer the
    job's (it was given up and retried: the caller frees what the attempt still holds with
    ``jobs.release_gpus``); JobNotFound.
    """
    row = lock(session, job_id)
    if row.attempt != attempt or row.state in (JobState.QUEUED, JobState.PLACED):
        raise _stale(row, attempt)  # type: ignore[arg-type]
    job = to_job(row)  # type: ignore[arg-type]
    conn = session.connection()
    if row.state is not JobState.RUNNING:
        conn.execute(END_CANCELLED, {"id": job_id, "code": ending.exit_code, "tail": ending.log_tail})
        conn.execute(RELEASE, {"job_id": job_id, "attempt": attempt, "node": None, "now": now})
        return replace(job, exit_code=ending.exit_code)
    check_transition(job_id, row.state, target)
    at = conn.execute(END, {"id": job_id, "state": target, "why": reason, "now": now,
                            "code": ending.exit_code, "tail": ending.log_tail}).scalar_one()
    conn.execute(RELEASE, {"job_id": job_id, "attempt": None, "node": None, "now": at})
    record_event(session, job_id, row.state, target, now=at, attempt=row.attempt, reason=reason,
                 node=row.node, gpus=row.gpu_indices)
    return replace(job, state=target, reason=reason, finished_at=at, exit_code=ending.exit_code)
