"""The scheduler's two jobs: a placement pass over the queue, and the reconcile tick."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from overlay import preemption
from overlay.config import Settings
from overlay.errors import GpuTaken, InvalidTransition, StaleAttempt
from overlay.fleet import Fleet, shape_of
from overlay.gang import parts_of
from overlay.liveness import expiry_window
from overlay.logfmt import job_fields
from overlay.model import GangPlacement, Job, Placement
from overlay.policies import get_policy
from overlay.preemption import AwaitStop, Preemption, Stopping
from overlay.queueing import plan_pass
from overlay.quota import Admit
from overlay.retry import decide_retry
from overlay.store import cluster_state, gangs, placing, sharing
from overlay.store import jobs as job_store
from overlay.store import nodes as node_store
from overlay.store import preemption as preemption_store
from overlay.store.holds import QueuedJobs, hold, queued_for_pass, still_stopping
from overlay.store.placing import Wanted
from overlay.store.running import running_jobs
from overlay.store.session import resolve_now

log = logging.getLogger(__name__)

# A PLACED job whose run_job has not started it by then had its message lost.
RESEND_AFTER_S = 10.0
# A cancelled job's GPUs are freed by its agent; if the agent died meanwhile, by reconcile.
STRAY_GRACE_S = 30.0
# A victim of a preemption waits this long past its grace for its preemptor to start.
PREEMPTOR_FIRST_S = 60.0
# Preemption plans a pass makes at most (each is up to a few thousand fleet look-ups).
MAX_PLANS_PER_PASS = 64


@dataclass(frozen=True, kw_only=True)
class RunJobMessage:
    """A run_job message to send once the transaction that placed the job has committed."""

    job_id: str
    attempt: int
    node: str
    part: int = 0  # which part of a gang job (overlay/gang.py)


@dataclass(frozen=True, kw_only=True)
class PreemptMessage:
    """A preempt message for a victim's node, to send once the preemption has committed:
    SIGTERM, ``grace_s`` to checkpoint, then the kill."""

    job_id: str
    attempt: int
    node: str
    reason: str
    grace_s: float


@dataclass(frozen=True, kw_only=True)
class PassResult:
    """What a pass decided to send: run_job for each placement, preempt for each victim."""

    runs: list[RunJobMessage]
    preempts: list[PreemptMessage] = field(default_factory=list)


def schedule_pass(
    sessions: sessionmaker[Session], settings: Settings, *, now: datetime | None = None,
    batch: bool = True, queue: QueuedJobs | None = None,
) -> PassResult:
    """Place what fits of the queue, preempt for what waits (PREEMPTION=on), record why the
    rest waits; return what to dispatch.

    ``now`` is Postgres's clock unless given (tests give one). One-node placements are
    written together (``batch``; bench/placement.py compares it with one job at a time).
    ``queue``: the process's copy of the queued jobs by row version, where it keeps one.
    """
    with sessions.begin() as s:
        cluster_state.hold_scheduler_lock(s)  # one pass at a time across every scheduler process
        queued = queued_for_pass(s, queue)  # but tasks beyond their array's %N limit (overlay/store/holds.py)
        if not queued:
            return PassResult(runs=[])
        now = resolve_now(s, now)
        policy = get_policy(cluster_state.active_policy(s, default=settings.scheduler_policy))
        snapshots = node_store.live_snapshots(s, now=now, ttl_s=settings.node_ttl_s)
        fleet = Fleet.from_snapshots(snapshots)
        # Fair share orders the queue; account quotas admit each placement (or lend idle GPUs).
        order, admit = sharing.pass_rules(s, now=now, nodes=snapshots, weights=settings.priority_weights,
                                          half_life_s=settings.fairshare_half_life)
        # Dependencies not met and arrays at their %N limit keep jobs out of the plan, and so
        # does a preempted attempt until its agent has stopped it and its preemptor has run.
        holds = hold(s, queued, now=now)
        messages: list[RunJobMessage] = []
        placed: list[Job] = []
        waiting: dict[str, str] = dict(holds.waiting)
        # An attempt still being stopped (preempted, or a retried gang's part) keeps its job out.
        by_id = {j.job_id: j for j in queued}
        still = still_stopping(s, queued)
        stopping = [Stopping(job_id=job_id, node=node, gpus=gpus, for_job=by)
                    for job_id, nodes in still.items() if (by := by_id[job_id].preempted_by)
                    for node, gpus in nodes.items()]
        for job_id, nodes in still.items():
            by, where = by_id[job_id].preempted_by, ", ".join(nodes)
            waiting[job_id] = (f"preempted by {by}; stopping on {where}" if by
                               else f"waiting for its previous attempt to stop on {where}")
        yielding = preemption.yielding(queued, now=now, within_s=settings.preempt_grace_s + PREEMPTOR_FIRST_S)
        waiting.update({v: f"preempted by {p}; waiting for {p} to start" for v, p in yielding.items()
                        if v not in waiting})
        held = still.keys() | yielding.keys()
        ready = {j.job_id: j for j in holds.ready if j.job_id not in held}
        blocked: list[Job] = []
        wanted: list[Wanted] = []
        # A job that preempted others goes first, so the GPUs it freed are its own.
        first = preemption.preemptors_first(order, set(yielding.values()) | {x.for_job for x in stopping})
        for decision in plan_pass(ready.values(), fleet, policy=policy, running=running_jobs(s, now=now),
                                  now=now, order=first, admit=holds.gate(admit)):
            if not isinstance(decision.outcome, Placement):
                waiting[decision.job_id] = decision.outcome.reason
                if ready[decision.job_id].spec.nodes == 1:  # a gang preempts no one (yet)
                    blocked.append(ready[decision.job_id])
                continue
            if batch and not isinstance(decision.outcome, GangPlacement):
                wanted.append(Wanted(job_id=decision.job_id, placement=decision.outcome,
                                     borrowed=decision.borrowed))
                continue
            try:
                job = job_store.place(s, decision.job_id, decision.outcome, now=now,
                                      borrowed=decision.borrowed,
                                      ports=(settings.gang_port_min, settings.gang_port_max))
            except GpuTaken as e:
                waiting[decision.job_id] = f"{e.message}; will retry"
                continue
            messages += run_messages(job, decision.outcome)
            placed.append(job)
        # The one-node placements, written together (overlay/store/placing.py).
        written = placing.place_many(s, wanted, now=now)
        waiting.update({job_id: f"{why}; will retry" for job_id, why in written.refused.items()})
        for job in written.jobs:
            messages += run_messages(job, Placement(node=job.node or "", gpus=job.gpus))
            placed.append(job)
        done: list[Preemption] = []
        if settings.preemption == "on" and blocked:
            done = preempt(s, blocked, fleet, admit, stopping, now=now, gap=settings.preempt_priority_gap,
                           reasons=waiting)
        was = {j.job_id: j.reason for j in queued}
        job_store.set_waiting_reasons(s, {j: r for j, r in waiting.items() if was.get(j) != r})
    for job in placed:  # committed now
        log.info("job %s placed on %s, GPUs %s", job.job_id, job.node, list(job.gpus), extra=job_fields(
            job.job_id, job.node, state=job.state.value, attempt=job.attempt, gpus=list(job.gpus)))
    if messages:
        log.info("placed %d job(s); %d waiting", len(messages), len(waiting))
    preempts = []
    for p in done:
        for v in p.victims:
            log.warning("job %s preempted for %s on %s, GPUs %s (%.0f GPU-seconds of work lost unless it "
                        "checkpoints)", v.job_id, p.job_id, v.node, list(v.gpus), v.gpu_seconds,
                        extra=job_fields(v.job_id, v.node, state="QUEUED", attempt=v.attempt,
                                         reason=f"preempted by {p.job_id}"))
            preempts.append(PreemptMessage(job_id=v.job_id, attempt=v.attempt, node=v.node,
                                           reason=f"preempted by {p.job_id}",
                                           grace_s=settings.preempt_grace_s))
    return PassResult(runs=messages, preempts=preempts)


def preempt(session: Session, blocked: list[Job], fleet: Fleet, admit: Admit, stopping: list[Stopping], *,
            now: datetime, gap: int, reasons: dict[str, str]) -> list[Preemption]:
    """For each job that waits (in queue order), stop the running jobs that let it run at
    the least lost work (overlay/preemption.py), unless its victims are still stopping;
    record it (events on both sides; the victims back to QUEUED) in this transaction and
    add to each waiting job's reason what it waits for."""
    candidates = preemption.current(preemption_store.candidates(session, now=now), admit)
    eligible = [c for c in candidates if c.preemptible]
    if not eligible:
        return []
    lowest = min(c.priority for c in eligible)
    any_borrowed = any(c.borrowed for c in eligible)
    stopping = list(stopping)
    # (shape, GPUs, priority, account, preemptible): no set of victims for such a job
    hopeless: set[tuple[object, ...]] = set()
    done: list[Preemption] = []
    plans = 0
    for job in blocked:
        spec = job.spec
        mine = any(x.for_job == job.job_id for x in stopping)
        if not mine and not any_borrowed and spec.priority - gap < lowest:
            continue  # nobody it may stop
        key = (shape_of(spec), spec.gpus, spec.priority, spec.account, spec.preemptible)
        if not mine and key in hopeless:
            continue
        plans += 1
        if plans > MAX_PLANS_PER_PASS:  # the rest waits for the next pass: a pass stays short
            break
        found = preemption.choose(spec, fleet, eligible, gap=gap, admit=admit, stopping=stopping)
        if isinstance(found, AwaitStop):
            reasons[job.job_id] = f"{reasons[job.job_id]}; {found.describe()}"
            continue
        if found is None:
            hopeless.add(key)
            continue
        try:
            with session.begin_nested():
                for v in sorted(found.victims, key=lambda v: v.job_id):  # one lock order for all
                    preemption_store.preempt(session, v.job_id, attempt=v.attempt, by=job.job_id, now=now)
        except StaleAttempt as e:  # a victim ended meanwhile: the next pass sees its GPUs free
            log.info("job %s: preemption for it not made: %s", job.job_id, e.message)
            continue
        job_store.note(session, job, found.describe(), now=now)
        reasons[job.job_id] = f"{reasons[job.job_id]}; {found.describe()}"
        gone = {v.job_id for v in found.victims}
        eligible = [c for c in eligible if c.job_id not in gone]
        stopping += [Stopping(job_id=v.job_id, node=v.node, gpus=v.gpus, for_job=job.job_id)
                     for v in found.victims]
        done.append(found)
    return done


def run_messages(job: Job, placement: Placement) -> list[RunJobMessage]:
    """One run_job per part of the placed job (one for a one-node job)."""
    return [RunJobMessage(job_id=job.job_id, attempt=job.attempt, node=p.node, part=rank)
            for rank, p in enumerate(parts_of(placement))]


def reconcile(
    sessions: sessionmaker[Session], settings: Settings, *, now: datetime | None = None
) -> list[RunJobMessage]:
    """Expire silent nodes, retry or fail their jobs, free stray GPUs, and return the
    PLACED jobs whose run_job message must be sent again.

    ``now`` is Postgres's clock unless given (tests give one): node silences are
    measured on the clock that wrote last_seen.
    """
    with sessions.begin() as s:
        previous, paused = cluster_state.reconcile_state(s)
        now = resolve_now(s, now)
        window = expiry_window(now, previous_tick=previous, paused_until=paused,
                               ttl_s=settings.node_ttl_s, tick_s=settings.reconcile_interval_s)
        cluster_state.save_reconcile_state(s, tick=now, paused_until=window.paused_until)
        if window.cutoff is not None:
            for name in node_store.expire_nodes(s, cutoff=window.cutoff):
                log.warning("node %s is offline: no heartbeat for %ss", name, settings.node_ttl_s)
        for job in [*job_store.active_on_offline_nodes(s), *gangs.on_offline_nodes(s)]:
            retry_lost(s, job, now=now)
        job_store.release_stray_allocations(s, before=now - timedelta(seconds=STRAY_GRACE_S), now=now,
                                            grace_s=settings.preempt_grace_s)
        before = now - timedelta(seconds=RESEND_AFTER_S)
        stale = job_store.stale_placements(s, placed_before=before)
        parts = gangs.stale_parts(s, placed_before=before)
    return ([RunJobMessage(job_id=j.job_id, attempt=j.attempt, node=j.node or "") for j in stale]
            + [RunJobMessage(job_id=j, attempt=a, node=n, part=p) for j, a, p, n in parts])


def retry_lost(session: Session, job: Job, *, now: datetime) -> None:
    """Retry or fail a job of a lost node, unless it moved on since it was read (its agent
    committed its end, or it was cancelled or re-placed): then leave it as it is."""
    decision = decide_retry(job)
    try:
        if job.spec.nodes > 1:  # the gang as one; its parts on live nodes are stopped by their agents
            gangs.give_up(session, job, decision.target, reason=decision.reason, now=now)
        else:
            job_store.transition(session, job.job_id, decision.target, now=now, reason=decision.reason,
                                 attempt=job.attempt)
    except (InvalidTransition, StaleAttempt) as e:
        log.info("job %s: not retried, it moved on: %s", job.job_id, e.message)
        return
    log.warning("job %s: %s", job.job_id, decision.reason, extra=job_fields(
        job.job_id, job.node, state=decision.target.value, attempt=job.attempt))
