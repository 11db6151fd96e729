"""Gang jobs' parts (job_parts): start and end each part, end the job as one, find the parts
to resend, stop or give up. The job row keeps one state for the whole gang, and rank 0's
node and GPUs."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from sqlalchemy import bindparam, or_, select
from sqlalchemy.orm import Session

from overlay.model import Job, JobPart, NodeState
from overlay.states import JobState
from overlay.store import moves
from overlay.store import parts as part_rows
from overlay.store.jobs import (
    Ending,
    _move,
    _stale,
    get_job,
    release_gpus,
    to_job,
    transition,
)
from overlay.store.session import resolve_now
from overlay.store.tables import JobPartRow, JobRow, NodeRow

ACTIVE = (JobState.PLACED, JobState.RUNNING)
# A part still holding its node: placed and not started, or running.
UNENDED = (JobState.PLACED.value, JobState.RUNNING.value)


def to_part(row: JobPartRow) -> JobPart:
    return JobPart(part=row.part, node=row.node, gpus=tuple(row.gpu_indices), state=row.state,
                   exit_code=row.exit_code, reason=row.reason, started_at=row.started_at,
                   finished_at=row.finished_at)


def parts(session: Session, job_id: str) -> list[JobPart]:
    """The parts of the job's latest placement, by rank ([] for a one-node job)."""
    rows = session.scalars(select(JobPartRow).where(JobPartRow.job_id == job_id).order_by(JobPartRow.part))
    return [to_part(r) for r in rows]


def _part_row(session: Session, job_id: str, part: int) -> JobPartRow | None:
    return session.scalars(select(JobPartRow).where(JobPartRow.job_id == job_id, JobPartRow.part == part)
                           .with_for_update().execution_options(populate_existing=True)).one_or_none()


def as_part(job: Job, row: JobPartRow) -> Job:
    """``job`` as the part ``row`` runs it: that part's node and GPUs."""
    return replace(job, part=row.part, node=row.node, gpus=tuple(row.gpu_indices))


def start(session: Session, job_id: str, *, attempt: int, part: int, node: str,
          now: datetime | None = None) -> Job:
    """Start a one-node job (``moves.start``) or a gang job's part (``start_part``)."""
    row = moves.lock(session, job_id)  # one locked read: an agent does this per job
    if row.nodes > 1:
        return start_part(session, job_id, attempt=attempt, part=part, node=node, now=now)
    if part:
        raise _stale(row, attempt)  # type: ignore[arg-type]  # a Row has the fields it reads
    return moves.start(session, row, attempt=attempt, node=node, now=now)


def as_this_node(session: Session, job: Job, node: str) -> Job:
    """A gang job as its part on ``node`` runs it (as it is, if no part is there)."""
    row = session.scalars(select(JobPartRow).where(JobPartRow.job_id == job.job_id,
                                                   JobPartRow.node == node)).first()
    return job if row is None else as_part(job, row)


def start_part(session: Session, job_id: str, *, attempt: int, part: int, node: str,
               now: datetime | None = None) -> Job:
    """Mark the part started; the first part to start moves the job PLACED -> RUNNING.

    Raises StaleAttempt (nothing changes) unless the job is PLACED or RUNNING for this
    attempt and the part is placed, not started, on ``node``; JobNotFound.
    """
    row = get_job(session, job_id, lock=True)
    p = _part_row(session, job_id, part)
    if (row.attempt != attempt or row.state not in ACTIVE or p is None
            or (p.attempt, p.node, p.state) != (attempt, node, JobState.PLACED.value)):
        raise _stale(row, attempt)
    now = resolve_now(session, now)
    p.state, p.started_at = JobState.RUNNING.value, now
    if row.state is JobState.PLACED:
        return as_part(_move(session, row, JobState.RUNNING, now=now, reason=None), p)
    session.flush()
    return as_part(to_job(row), p)


def finish_part(session: Session, job_id: str, *, attempt: int, part: int, target: JobState,
                reason: str | None, ending: Ending, now: datetime | None = None) -> Job:
    """Record how a part ended and free its node's GPUs; end the job as one: DONE once every
    part ended DONE, FAILED or CANCELLED as soon as one part ended so (the other parts are
    then to be stopped: ``to_stop``). The job (as this part) as it is now.

    Raises StaleAttempt, recording nothing, when the attempt is no longer the job's;
    JobNotFound.
    """
    row = get_job(session, job_id, lock=True)
    p = _part_row(session, job_id, part)
    if (row.state is JobState.QUEUED and row.attempt == attempt and p is not None and p.attempt == attempt
            and p.state == JobState.RUNNING.value):
        # The gang was given up (retried) while this part ran on: its end is recorded and its
        # GPUs freed, so that the retry (held until then: ``stopping``) may be placed.
        now = resolve_now(session, now)
        p.state, p.exit_code = target.value, ending.exit_code
        p.reason = reason or "stopped: the gang was retried"
        p.log_tail, p.finished_at = ending.log_tail, now
        release_gpus(session, job_id, attempt=attempt, node=p.node, now=now)
        session.flush()
        return as_part(to_job(row), p)
    if row.attempt != attempt or row.state in (JobState.QUEUED, JobState.PLACED) or p is None \
            or p.attempt != attempt:
        raise _stale(row, attempt)
    now = resolve_now(session, now)
    p.state, p.exit_code, p.reason = target.value, ending.exit_code, reason
    p.log_tail, p.finished_at = ending.log_tail, now
    release_gpus(session, job_id, attempt=attempt, node=p.node, now=now)
    if row.state is JobState.RUNNING and target is not JobState.DONE:
        why = f"part {part} on {p.node}: {reason}" if reason else f"part {part} on {p.node} ended"
        job = _move(session, row, target, now=now, reason=why, keep_gpus=True, ending=ending)
        part_rows.end_unstarted(session, row, now=now)
        return as_part(job, p)
    if row.state is JobState.RUNNING and _all_done(session, job_id):
        first = session.scalars(select(JobPartRow.log_tail).where(
            JobPartRow.job_id == job_id, JobPartRow.part == 0)).one()
        return as_part(_move(session, row, JobState.DONE, now=now, reason=None, keep_gpus=True,
                             ending=Ending(exit_code=0, log_tail=first)), p)
    if part == 0 and row.state.terminal:  # cancelled meanwhile: rank 0's end is the job's output
        row.exit_code, row.log_tail = ending.exit_code, ending.log_tail
    session.flush()
    return as_part(to_job(row), p)


def _all_done(session: Session, job_id: str) -> bool:
    states = session.scalars(select(JobPartRow.state).where(JobPartRow.job_id == job_id)).all()
    return all(s == JobState.DONE.value for s in states)


def to_stop(session: Session, job_id: str, *, attempt: int, besides: int | None = None) -> list[str]:
    """The nodes of the attempt's parts that may still run (all but part ``besides``)."""
    return list(session.scalars(select(JobPartRow.node).where(
        JobPartRow.job_id == job_id, JobPartRow.attempt == attempt, JobPartRow.state.in_(UNENDED),
        JobPartRow.part != (-1 if besides is None else besides)).order_by(JobPartRow.part)))


# A job's state, attempt and node count, by primary key (an agent reads it after every end).
STATE_ATTEMPT_NODES = (select(JobRow.state.label("state"), JobRow.attempt, JobRow.nodes)
                       .where(JobRow.job_id == bindparam("id")))


def to_stop_after(session: Session, job_id: str, *, attempt: int, part: int) -> tuple[list[str], str]:
    """Once part ``part`` of the attempt ended: the nodes of the other parts to stop, if that
    ended the job (a part failed or was cancelled), and why; none for a one-node job (one
    read by primary key)."""
    found = session.connection().execute(STATE_ATTEMPT_NODES, {"id": job_id}).one_or_none()
    if found is None or found.nodes <= 1 or found.attempt != attempt or not found.state.terminal:
        return [], ""
    return to_stop(session, job_id, attempt=attempt, besides=part), f"job is {found.state.value}"


def give_up(session: Session, job: Job, target: JobState, *, reason: str, now: datetime | None,
            lost: str | None = None) -> Job:
    """Retry (QUEUED) or fail a gang job whose part was lost, as one: the GPUs of parts on
    nodes that are not online (or on ``lost``), and of parts not started, are freed now; a
    part still running on a live node keeps its GPUs until its agent has stopped it and
    records its end. Raises what ``transition`` raises."""
    moved = transition(session, job.job_id, target, now=now, reason=reason, attempt=job.attempt,
                       keep_gpus=True)
    row = get_job(session, job.job_id, lock=True)
    part_rows.end_unstarted(session, row, now=now)
    live = select(NodeRow.name).where(NodeRow.state == NodeState.ONLINE.value)
    gone = session.scalars(select(JobPartRow).where(
        JobPartRow.job_id == job.job_id, JobPartRow.attempt == job.attempt,
        JobPartRow.state.in_(UNENDED), or_(JobPartRow.node.not_in(live), JobPartRow.node == lost)))
    for p in gone:
        p.state, p.reason, p.finished_at = JobState.FAILED.value, reason, resolve_now(session, now)
        release_gpus(session, job.job_id, attempt=job.attempt, node=p.node, now=now)
    return moved


def on_offline_nodes(session: Session) -> list[Job]:
    """PLACED or RUNNING gang jobs with an unended part on a node that is not online, each
    as that part (the first such)."""
    live = select(NodeRow.name).where(NodeRow.state == NodeState.ONLINE.value)
    rows = session.execute(
        select(JobRow, JobPartRow).join(JobPartRow, JobPartRow.job_id == JobRow.job_id)
        .where(JobRow.state.in_(ACTIVE), JobPartRow.attempt == JobRow.attempt,
               JobPartRow.state.in_(UNENDED), JobPartRow.node.not_in(live))
        .order_by(JobRow.job_id, JobPartRow.part)).all()
    found: dict[str, Job] = {}
    for job_row, part_row in rows:
        found.setdefault(job_row.job_id, as_part(to_job(job_row), part_row))
    return list(found.values())


def running_parts_on(session: Session, node: str) -> list[Job]:
    """The RUNNING gang jobs' parts running on ``node``, each as its part."""
    rows = session.execute(
        select(JobRow, JobPartRow).join(JobPartRow, JobPartRow.job_id == JobRow.job_id)
        .where(JobRow.state == JobState.RUNNING, JobPartRow.attempt == JobRow.attempt,
               JobPartRow.state == JobState.RUNNING.value, JobPartRow.node == node)
        # Locked, as jobs.running_on locks one-node jobs: a part's end recorded while the
        # caller looks for its supervisor waits, instead of looking like a lost part.
        .order_by(JobRow.job_id).with_for_update()
        .execution_options(populate_existing=True)).all()
    return [as_part(to_job(j), p) for j, p in rows]


def stale_parts(session: Session, *, placed_before: datetime) -> list[tuple[str, int, int, str]]:
    """(job_id, attempt, part, node) of the parts of PLACED or RUNNING gang jobs, placed before
    ``placed_before``, that their run_job has not started."""
    return [tuple(r) for r in session.execute(  # type: ignore[misc]
        select(JobPartRow.job_id, JobPartRow.attempt, JobPartRow.part, JobPartRow.node)
        .join(JobRow, JobRow.job_id == JobPartRow.job_id)
        .where(JobRow.state.in_(ACTIVE), JobPartRow.attempt == JobRow.attempt,
               JobPartRow.state == JobState.PLACED.value, JobRow.placed_at < placed_before)
        .order_by(JobPartRow.job_id, JobPartRow.part))]


def part_log_tail(session: Session, job_id: str, part: int) -> str:
    """The end of a part's output as its agent stored it ("" before its end)."""
    tail = session.scalar(select(JobPartRow.log_tail).where(JobPartRow.job_id == job_id,
                                                            JobPartRow.part == part))
    return tail or ""
