"""The scheduler's two jobs: a placement pass over the queue, and the reconcile tick."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from overlay.config import Settings
from overlay.errors import GpuTaken, InvalidTransition, StaleAttempt
from overlay.fleet import Fleet
from overlay.liveness import expiry_window
from overlay.logfmt import job_fields
from overlay.model import Job, Placement
from overlay.policies import get_policy
from overlay.queueing import plan_pass
from overlay.retry import decide_retry
from overlay.store import cluster_state, sharing
from overlay.store import jobs as job_store
from overlay.store import nodes as node_store
from overlay.store.holds import hold, queued_for_pass
from overlay.store.running import running_jobs
from overlay.store.session import resolve_now

log = logging.getLogger(__name__)

# A PLACED job whose run_job has not started it by then had its message lost.
RESEND_AFTER_S = 10.0
# A cancelled job's GPUs are freed by its agent; if the agent died meanwhile, by reconcile.
STRAY_GRACE_S = 30.0


@dataclass(frozen=True, kw_only=True)
class RunJobMessage:
    """A run_job message to send once the transaction that placed the job has committed."""

    job_id: str
    attempt: int
    node: str


def schedule_pass(
    sessions: sessionmaker[Session], settings: Settings, *, now: datetime | None = None
) -> list[RunJobMessage]:
    """Place what fits of the queue, record why the rest waits; return what to dispatch.

    ``now`` is Postgres's clock unless given (tests give one).
    """
    with sessions.begin() as s:
        cluster_state.hold_scheduler_lock(s)  # one pass at a time across every scheduler process
        queued = queued_for_pass(s)  # but tasks beyond their array's %N limit (overlay/store/holds.py)
        if not queued:
            return []
        now = resolve_now(s, now)
        policy = get_policy(cluster_state.active_policy(s, default=settings.scheduler_policy))
        snapshots = node_store.live_snapshots(s, now=now, ttl_s=settings.node_ttl_s)
        fleet = Fleet.from_snapshots(snapshots)
        # Fair share orders the queue; account quotas admit each placement (or lend idle GPUs).
        order, admit = sharing.pass_rules(s, now=now, nodes=snapshots, weights=settings.priority_weights,
                                          half_life_s=settings.fairshare_half_life)
        # Dependencies not met and arrays at their %N limit keep jobs out of the plan.
        holds = hold(s, queued, now=now)
        messages: list[RunJobMessage] = []
        placed: list[Job] = []
        waiting: dict[str, str] = dict(holds.waiting)
        for decision in plan_pass(holds.ready, fleet, policy=policy, running=running_jobs(s, now=now),
                                  now=now, order=order, admit=holds.gate(admit)):
            if not isinstance(decision.outcome, Placement):
                waiting[decision.job_id] = decision.outcome.reason
                continue
            try:
                job = job_store.place(s, decision.job_id, decision.outcome, now=now,
                                      borrowed=decision.borrowed)
            except GpuTaken as e:
                waiting[decision.job_id] = f"{e.message}; will retry"
                continue
            assert job.node is not None
            messages.append(RunJobMessage(job_id=job.job_id, attempt=job.attempt, node=job.node))
            placed.append(job)
        was = {j.job_id: j.reason for j in queued}
        job_store.set_waiting_reasons(s, {j: r for j, r in waiting.items() if was.get(j) != r})
    for job in placed:  # committed now
        log.info("job %s placed on %s, GPUs %s", job.job_id, job.node, list(job.gpus), extra=job_fields(
            job.job_id, job.node, state=job.state.value, attempt=job.attempt, gpus=list(job.gpus)))
    if messages:
        log.info("placed %d job(s); %d waiting", len(messages), len(waiting))
    return messages


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
        for job in job_store.active_on_offline_nodes(s):
            retry_lost(s, job, now=now)
        job_store.release_stray_allocations(s, before=now - timedelta(seconds=STRAY_GRACE_S), now=now)
        stale = job_store.stale_placements(s, placed_before=now - timedelta(seconds=RESEND_AFTER_S))
    return [RunJobMessage(job_id=j.job_id, attempt=j.attempt, node=j.node or "") for j in stale]


def retry_lost(session: Session, job: Job, *, now: datetime) -> None:
    """Retry or fail a job of a lost node, unless it moved on since it was read (its agent
    committed its end, or it was cancelled or re-placed): then leave it as it is."""
    decision = decide_retry(job)
    try:
        job_store.transition(session, job.job_id, decision.target, now=now, reason=decision.reason,
                             attempt=job.attempt)
    except (InvalidTransition, StaleAttempt) as e:
        log.info("job %s: not retried, it moved on: %s", job.job_id, e.message)
        return
    log.warning("job %s: %s", job.job_id, decision.reason, extra=job_fields(
        job.job_id, job.node, state=decision.target.value, attempt=job.attempt))
