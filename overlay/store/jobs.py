"""The job repository: insert, read, list and move jobs, one job event per transition."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import TextClause, bindparam, exists, func, insert, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from overlay.errors import DuplicateJob, GpuTaken, JobNotFound, StaleAttempt
from overlay.gang import PORT_RANGE, parts_of
from overlay.identity import Caller
from overlay.model import GangPlacement, Job, JobEvent, JobSpec, NodeState, Placement
from overlay.states import TIMESTAMP_OF, JobState, check_transition
from overlay.store import parts, stats, usage
from overlay.store.session import resolve_now
from overlay.store.tables import GpuAllocationRow, JobEventRow, JobPartRow, JobRow, NodeRow

# JobSpec fields stored as they are; cmd, env and node_selector change container type.
SCALAR_SPEC_FIELDS = ("job_id", "image", "gpus", "gpu_memory_mb", "gpu_model", "priority",
                      "timeout_s", "max_retries", "memory_mb", "array_id", "array_index", "preemptible",
                      "nodes")


def to_spec(row: JobRow) -> JobSpec:
    return JobSpec(
        cmd=tuple(row.cmd),
        env=dict(row.env),
        node_selector=dict(row.node_selector),
        user=row.user_name,
        account=row.account,
        **{f: getattr(row, f) for f in SCALAR_SPEC_FIELDS},
    )


def spec_columns(spec: JobSpec) -> dict[str, Any]:
    return dict(
        cmd=list(spec.cmd),
        env=dict(spec.env),
        node_selector=dict(spec.node_selector),
        user_name=spec.user,
        account=spec.account,
        **{f: getattr(spec, f) for f in SCALAR_SPEC_FIELDS},
    )


def to_job(row: JobRow) -> Job:
    return Job(
        spec=to_spec(row),
        state=row.state,
        attempt=row.attempt,
        node=row.node,
        gpus=tuple(row.gpu_indices),
        exit_code=row.exit_code,
        reason=row.reason,
        enqueued_at=row.enqueued_at,
        placed_at=row.placed_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        borrowed=row.borrowed,
        preemptions=row.preemptions,
        preempted_by=row.preempted_by,
        preempted_at=row.preempted_at,
        master_addr=row.master_addr,
        master_port=row.master_port,
    )


def _insert_job_statement() -> TextClause:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING enqueued_at, as text with typed parameters.

    SQLAlchemy 2.0 gives the PostgreSQL ``insert()`` no cache key, so built as an
    expression it was compiled again on every submit.
    """
    fields = [*spec_columns(JobSpec(job_id="", cmd=("",))), "state", "attempt", "gpu_indices", "log_tail",
              "enqueued_at"]
    columns = [JobRow.__mapper__.columns[f] for f in fields]
    # enqueued_at is Postgres's clock unless the caller gives one (the one clock: store/session.py).
    values = [f"coalesce(:{f}, clock_timestamp())" if f == "enqueued_at" else f":{f}" for f in fields]
    sql = (f"INSERT INTO {JobRow.__tablename__} ({', '.join(c.name for c in columns)}) "
           f"VALUES ({', '.join(values)}) ON CONFLICT (job_id) DO NOTHING RETURNING enqueued_at")
    return text(sql).bindparams(*(bindparam(f, type_=c.type) for f, c in zip(fields, columns, strict=True)))


INSERT_JOB = _insert_job_statement()


def insert_job(session: Session, spec: JobSpec, *, now: datetime | None = None) -> Job:
    """Store a new QUEUED job and its first event; raise DuplicateJob if the id exists.

    ON CONFLICT DO NOTHING keeps concurrent submits of one id from erroring in
    Postgres: exactly one insert returns a row.
    """
    values = dict(
        **spec_columns(spec),
        state=JobState.QUEUED,
        attempt=0,
        gpu_indices=[],
        log_tail="",
        enqueued_at=now,
    )
    # Core, not the ORM: this is the submit hot path, and every value is known already.
    # The values go as parameters, so the statement is compiled once per process.
    enqueued = session.execute(INSERT_JOB, values).scalar_one_or_none()
    if enqueued is None:
        raise DuplicateJob(spec.job_id)
    record_event(session, spec.job_id, None, JobState.QUEUED, now=enqueued, attempt=0, reason="submitted")
    return Job(spec=spec, state=JobState.QUEUED, enqueued_at=enqueued)


def get_job(session: Session, job_id: str, *, lock: bool = False) -> JobRow:
    """The job's row (locked FOR UPDATE if asked); raise JobNotFound.

    A locked read refreshes a row this session loaded before: without that, the ORM
    would hand back the values it read earlier, and a caller could write over a state
    another transaction committed in between (a DONE job requeued or cancelled).
    """
    stmt = select(JobRow).where(JobRow.job_id == job_id)
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    row = session.scalars(stmt).one_or_none()
    if row is None:
        raise JobNotFound(job_id)
    return row


def list_jobs(
    session: Session, *, state: JobState | None, limit: int, offset: int, owner: Caller | None = None
) -> tuple[list[Job], int]:
    """One page of jobs, newest first, and how many match in all (from the job counters:
    counting a million rows per page would cost more than the page). Given an ``owner`` who
    is not an admin, only the jobs they may see (overlay.identity.may_see), counted by index."""
    where = [JobRow.state == state] if state else []
    if owner is not None and not owner.admin:
        where.append(or_(JobRow.user_name == owner.user, JobRow.account.in_(sorted(owner.coordinates))))
        total = session.scalar(select(func.count()).select_from(JobRow).where(*where)) or 0
    else:
        total = stats.count_jobs(session, state)
    rows = session.scalars(
        select(JobRow)
        .where(*where)
        .order_by(JobRow.enqueued_at.desc(), JobRow.job_id)
        .limit(limit)
        .offset(offset)
    )
    return [to_job(r) for r in rows], total


# Every column, for reads that need no ORM object: identity map and change tracking cost
# most of a read for nothing when the job is only shown or planned. Taken from the table
# and labelled by attribute (``state``, not the column ``status``), so that ``to_job``
# reads its rows whether the session runs it or, built once, the session's connection
# does (no ORM compile step: the API reads a job by id on every GET and long-poll wake).
JOB_COLUMNS = select(*(JobRow.__table__.c[a.columns[0].name].label(a.key)
                       for a in JobRow.__mapper__.column_attrs))
JOB_BY_ID = JOB_COLUMNS.where(JobRow.__table__.c.job_id == bindparam("id"))


def read_job(session: Session, job_id: str) -> Job:
    """The job, read as a plain row (polled by waiting clients); raise JobNotFound."""
    row = session.connection().execute(JOB_BY_ID, {"id": job_id}).one_or_none()
    if row is None:
        raise JobNotFound(job_id)
    return to_job(row)  # type: ignore[arg-type]  # a Row has the attributes to_job reads


def queued_jobs(session: Session) -> list[Job]:
    """Every QUEUED job, read as plain rows: a scheduling pass reads the whole queue."""
    rows = session.execute(JOB_COLUMNS.where(JobRow.state == JobState.QUEUED))
    return [to_job(r) for r in rows]  # type: ignore[arg-type]


def transition(
    session: Session,
    job_id: str,
    target: JobState,
    *,
    now: datetime | None = None,
    reason: str | None = None,
    attempt: int | None = None,
    keep_gpus: bool = False,
) -> Job:
    """Move a job to ``target`` under a row lock, record the event, free GPUs on leaving.

    Raises JobNotFound, InvalidTransition, or StaleAttempt when ``attempt`` is
    given and is not the job's current attempt. ``keep_gpus`` leaves the GPUs held
    (a cancelled job's process may still be dying; its agent frees them).
    """
    row = get_job(session, job_id, lock=True)
    if attempt is not None and attempt != row.attempt:
        raise StaleAttempt(job_id=job_id, attempt=attempt, current=row.attempt)
    return _move(session, row, target, now=now, reason=reason, keep_gpus=keep_gpus)


@dataclass(frozen=True, kw_only=True)
class Ending:
    """What an attempt left when it ended: its exit code and the tail of its log."""

    exit_code: int | None
    log_tail: str


def _move(
    session: Session, row: JobRow, target: JobState, *, now: datetime | None, reason: str | None,
    keep_gpus: bool = False, ending: Ending | None = None,
) -> Job:
    """``transition`` for a row already read and locked in this transaction."""
    now = resolve_now(session, now)
    job_id = row.job_id
    current = row.state
    check_transition(job_id, current, target)
    row.state = target
    row.reason = reason
    if target in TIMESTAMP_OF:
        setattr(row, f"{TIMESTAMP_OF[target]}_at", now)
    if ending is not None:
        row.exit_code, row.log_tail = ending.exit_code, ending.log_tail
    if (target.terminal or target is JobState.QUEUED) and not keep_gpus:
        release_gpus(session, job_id, now=now)
    record_event(session, job_id, current, target, now=now, attempt=row.attempt, reason=reason,
                 node=row.node, gpus=row.gpu_indices)
    session.flush()
    return to_job(row)


def _stale(row: JobRow, attempt: int) -> StaleAttempt:
    return StaleAttempt(job_id=row.job_id, attempt=attempt, current=row.attempt,
                        now=f"{row.state.value}, attempt {row.attempt}, on {row.node}")


def attempt_state(session: Session, job_id: str) -> tuple[JobState, int]:
    """The job's state and current attempt, read without a lock; raise JobNotFound."""
    found = session.execute(select(JobRow.state, JobRow.attempt).where(JobRow.job_id == job_id)).one_or_none()
    if found is None:
        raise JobNotFound(job_id)
    return found[0], found[1]


def any_queued(session: Session) -> bool:
    """Whether some job waits for placement (an agent asks after every end)."""
    return bool(session.connection().execute(ANY_QUEUED).scalar())


ANY_QUEUED = select(select(JobRow.job_id).where(JobRow.state == JobState.QUEUED).exists())


def cancel(session: Session, job_id: str, *, now: datetime | None = None) -> Job:
    """Cancel a job. A running job keeps its GPUs until its agent has killed it, and so does
    a queued one: it holds GPUs only while its last attempt is still being stopped (preempted,
    or a retried gang's part)."""
    row = get_job(session, job_id, lock=True)
    job = _move(session, row, JobState.CANCELLED, now=now, reason="cancelled by user",
                keep_gpus=row.state in (JobState.RUNNING, JobState.QUEUED))
    parts.end_unstarted(session, row, now=now)
    return job


def note(session: Session, job: Job, reason: str, *, now: datetime | None = None) -> None:
    """An event on ``job`` that changes nothing of it (it stays in its state): what happened
    to it, e.g. the jobs preempted for it."""
    record_event(session, job.job_id, job.state, job.state, now=resolve_now(session, now),
                 attempt=job.attempt, reason=reason, node=job.node, gpus=job.gpus)


def place(session: Session, job_id: str, placement: Placement, *, now: datetime | None = None,
          borrowed: bool = False, ports: tuple[int, int] = PORT_RANGE) -> Job:
    """Record a placement: hold the GPUs, then QUEUED -> PLACED with a new attempt
    (``borrowed``: on idle GPUs beyond the account's quota). A GangPlacement holds every
    part's GPUs or none, records its parts and picks its MASTER_PORT from ``ports``.

    Raises GpuTaken if another job holds one of the GPUs (the allocations'
    primary key is the last word on double-booking), JobNotFound, InvalidTransition.
    """
    row = get_job(session, job_id, lock=True)
    check_transition(job_id, row.state, JobState.PLACED)
    now = resolve_now(session, now)
    held = [dict(node=p.node, gpu_index=i, job_id=job_id, attempt=row.attempt + 1, allocated_at=now)
            for p in parts_of(placement) for i in p.gpus]
    if held:
        try:
            with session.begin_nested():
                session.execute(insert(GpuAllocationRow), held)
        except IntegrityError as e:
            raise GpuTaken(node=placement.node, gpus=placement.gpus) from e
    row.borrowed = borrowed
    if isinstance(placement, GangPlacement):
        parts.record(session, row, placement, ports=ports)
    return _placed(session, row, placement, now=now)


def _placed(session: Session, row: JobRow, placement: Placement, *, now: datetime) -> Job:
    row.attempt += 1
    row.state = JobState.PLACED
    row.node = placement.node
    row.gpu_indices = list(placement.gpus)
    row.placed_at = now
    row.started_at = None
    row.reason = None
    row.preempted_by = row.preempted_at = None
    record_event(session, row.job_id, JobState.QUEUED, JobState.PLACED, now=now, attempt=row.attempt,
                 node=row.node, gpus=row.gpu_indices)
    session.flush()
    return to_job(row)


def set_waiting_reasons(session: Session, reasons: dict[str, str]) -> None:
    """Record why queued jobs wait, touching only rows whose reason changed.

    One statement per distinct reason (jobs of one shape wait for one reason), not
    one per job: with thousands queued, per-job updates were most of a pass's time.
    """
    by_reason: dict[str, list[str]] = defaultdict(list)
    for job_id, reason in reasons.items():
        by_reason[reason].append(job_id)
    for reason, job_ids in by_reason.items():
        session.execute(
            update(JobRow)
            .where(JobRow.job_id.in_(job_ids), JobRow.state == JobState.QUEUED)
            .where(JobRow.reason.is_distinct_from(reason))
            .values(reason=reason)
            .execution_options(synchronize_session=False)
        )


def release_gpus(session: Session, job_id: str, *, attempt: int | None = None, node: str | None = None,
                 now: datetime | None = None) -> None:
    """Free the job's GPUs (only those of ``attempt`` and ``node``, if given), recording each
    freed attempt's GPU-seconds up to ``now`` (overlay/store/usage.py) in this transaction."""
    usage.release(session, job_id, attempt=attempt, node=node, now=now)


def active_on_offline_nodes(session: Session) -> list[Job]:
    """PLACED or RUNNING one-node jobs whose node is offline or unknown (a gang job's
    parts: overlay/store/gangs.py ``on_offline_nodes``)."""
    live = select(NodeRow.name).where(NodeRow.state == NodeState.ONLINE.value)
    rows = session.scalars(
        select(JobRow)
        .where(JobRow.state.in_([JobState.PLACED, JobState.RUNNING]), JobRow.nodes == 1)
        .where(JobRow.node.not_in(live))
    )
    return [to_job(r) for r in rows]


def running_on(session: Session, node: str) -> list[Job]:
    """RUNNING one-node jobs on ``node``, their rows locked for this transaction (a gang
    job's parts: overlay/store/gangs.py ``running_parts_on``)."""
    rows = session.scalars(
        select(JobRow)
        .where(JobRow.state == JobState.RUNNING, JobRow.node == node, JobRow.nodes == 1)
        .order_by(JobRow.job_id)  # locks in job_id order, as a pass's preemption takes them
        .with_for_update()
    )
    return [to_job(r) for r in rows]


def stale_placements(session: Session, *, placed_before: datetime) -> list[Job]:
    """PLACED one-node jobs whose run_job has not started them since ``placed_before``
    (a gang job's parts: overlay/store/gangs.py ``stale_parts``)."""
    rows = session.scalars(
        select(JobRow)
        .where(JobRow.state == JobState.PLACED, JobRow.nodes == 1)
        .where(JobRow.placed_at < placed_before)
    )
    return [to_job(r) for r in rows]


def release_stray_allocations(session: Session, *, before: datetime, now: datetime | None = None,
                              grace_s: float = 0.0) -> int:
    """Free GPUs still held for attempts that ended before ``before`` (their agent died
    while killing them); return how many. A preempted attempt ends ``grace_s`` after its
    preemption at the latest (PREEMPT_GRACE_S)."""
    active = [JobState.PLACED, JobState.RUNNING]
    stray = (
        select(GpuAllocationRow.job_id, GpuAllocationRow.attempt)
        .join(JobRow, JobRow.job_id == GpuAllocationRow.job_id)
        .where(GpuAllocationRow.allocated_at < before)
        .where((JobRow.state.not_in(active)) | (JobRow.attempt != GpuAllocationRow.attempt))
        .where(func.coalesce(JobRow.finished_at, GpuAllocationRow.allocated_at) < before)
        .where(or_(JobRow.preempted_at.is_(None), JobRow.preempted_at < before - timedelta(seconds=grace_s)))
        # A gang's part still running on a live node (its gang was retried or ended around
        # it) keeps its GPUs until its agent has stopped it and recorded its end.
        .where(~exists().where(JobPartRow.job_id == GpuAllocationRow.job_id,
                               JobPartRow.attempt == GpuAllocationRow.attempt,
                               JobPartRow.node == GpuAllocationRow.node,
                               JobPartRow.state == JobState.RUNNING.value,
                               JobPartRow.node.in_(select(NodeRow.name).where(
                                   NodeRow.state == NodeState.ONLINE.value))))
    )
    pairs = session.execute(stray).all()
    for job_id, attempt in set(pairs):
        release_gpus(session, job_id, attempt=attempt, now=now)
    return len(pairs)


def history(session: Session, job_id: str) -> list[JobEvent]:
    """The job's events, oldest first, as domain values."""
    return [JobEvent(at=e.at, from_state=e.from_state, to_state=e.to_state, attempt=e.attempt, node=e.node,
                     gpus=tuple(e.gpu_indices), reason=e.reason) for e in events(session, job_id)]


def events(session: Session, job_id: str) -> Sequence[JobEventRow]:
    return session.scalars(
        select(JobEventRow).where(JobEventRow.job_id == job_id).order_by(JobEventRow.id)
    ).all()


# Every job event is also a NOTIFY on this channel ("<job_id> <state>"), delivered at
# commit, so API requests waiting on a job wake up instead of polling.
NOTIFY_CHANNEL = "overlay_job"


# A job event and its NOTIFY (the API's long polls wake on it) in one statement, built once.
EVENT = text(f"""
WITH e AS (
  INSERT INTO {JobEventRow.__tablename__}
    (job_id, at, from_state, to_state, attempt, node, gpu_indices, reason)
  VALUES (:job_id, :at, :from_state, :to_state, :attempt, :node, :gpus, :reason)
  RETURNING job_id
)
SELECT pg_notify('{NOTIFY_CHANNEL}', :job_id || ' ' || :to_state) FROM e
""").bindparams(*(bindparam(name, type_=JobEventRow.__table__.c[column].type) for name, column in (
    ("job_id", "job_id"), ("at", "at"), ("from_state", "from_state"), ("to_state", "to_state"),
    ("attempt", "attempt"), ("node", "node"), ("gpus", "gpu_indices"), ("reason", "reason"))))


def record_event(
    session: Session,
    job_id: str,
    from_state: JobState | None,
    to_state: JobState,
    *,
    now: datetime,
    attempt: int,
    reason: str | None = None,
    node: str | None = None,
    gpus: Sequence[int] | None = None,
) -> None:
    """Append the job's event and NOTIFY it, in this transaction."""
    session.connection().execute(EVENT, {
        "job_id": job_id, "at": now, "from_state": from_state.value if from_state else None,
        "to_state": to_state.value, "attempt": attempt, "node": node, "gpus": list(gpus or []),
        "reason": reason})


def log_tail(session: Session, job_id: str) -> str:
    """The end of the job's output as its agent last stored it ("" before any); raise JobNotFound."""
    tail = session.execute(select(JobRow.log_tail).where(JobRow.job_id == job_id)).one_or_none()
    if tail is None:
        raise JobNotFound(job_id)
    return tail[0] or ""
