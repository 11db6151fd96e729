"""What fair share and quotas need from the store, as the core's values: the decayed usage
of every account and user, and the GPUs each account's jobs hold now."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from overlay.fairshare import Priority, Usage, Weights, fold_usage, job_priority, multifactor_order
from overlay.model import Job, NodeSnapshot, Placement
from overlay.queueing import Queued
from overlay.quota import Admit, QuotaGate, admit_all
from overlay.store import accounts, usage
from overlay.store.tables import GpuAllocationRow, JobRow

# Attempts older than this many half-lives weigh under 0.1%: fair share leaves them out.
HORIZON_HALF_LIVES = 10
MAX_HORIZON = timedelta(days=3650)


def decayed_usage(session: Session, *, now: datetime, half_life_s: float) -> Usage:
    """Every account's and user's GPU-seconds at ``now``, decayed by ``half_life_s``: the
    ended attempts summed in Postgres, the running ones folded here."""
    horizon = timedelta(seconds=min(half_life_s * HORIZON_HALF_LIVES, MAX_HORIZON.total_seconds()))
    if not math.isfinite(half_life_s):  # no decay: fold every record here
        records = usage.ended_records(session, now=now, horizon=horizon) + usage.holding_records(session)
        return fold_usage(records, now=now, half_life_s=half_life_s)
    running = fold_usage(usage.holding_records(session), now=now, half_life_s=half_life_s)
    users = dict(running.users)
    for key, value in usage.decayed_ended(session, now=now, horizon=horizon, half_life_s=half_life_s).items():
        users[key] = users.get(key, 0.0) + value
    accounts: dict[str, float] = {}
    for (account, _), value in users.items():
        accounts[account] = accounts.get(account, 0.0) + value
    return Usage(at=now, accounts=accounts, users=users)


HOLDINGS = (select(JobRow.account, GpuAllocationRow.node, func.array_agg(GpuAllocationRow.gpu_index))
            .join(JobRow, JobRow.job_id == GpuAllocationRow.job_id)
            .group_by(GpuAllocationRow.job_id, GpuAllocationRow.attempt, GpuAllocationRow.node,
                      JobRow.account))


def holdings(session: Session) -> list[tuple[str, Placement]]:
    """(account, placement) of every attempt holding GPUs now."""
    return [(account, Placement(node=node, gpus=tuple(sorted(gpus))))
            for account, node, gpus in session.connection().execute(HOLDINGS)]


def pass_rules(session: Session, *, now: datetime, nodes: Iterable[NodeSnapshot], half_life_s: float,
               weights: Weights) -> tuple[Callable[[Iterable[Queued]], list[Queued]], Admit]:
    """The queue order (multifactor priority from decayed usage and the accounts' shares) and
    the admission check (the accounts' quotas, with borrowing) for a pass at ``now``."""
    quotas, shares = accounts.quotas_and_shares(session)
    usage = decayed_usage(session, now=now, half_life_s=half_life_s)
    order = multifactor_order(now=now, usage=usage, shares=shares, weights=weights)
    admit: Admit = QuotaGate(quotas, nodes, holdings(session)) if quotas else admit_all
    return order, admit


def gpu_owners(session: Session) -> dict[tuple[str, int], tuple[str, str]]:
    """(node, GPU index) -> (user, account) of the job holding that GPU."""
    rows = session.execute(
        select(GpuAllocationRow.node, GpuAllocationRow.gpu_index, JobRow.user_name, JobRow.account)
        .join(JobRow, JobRow.job_id == GpuAllocationRow.job_id))
    return {(node, index): (user, account) for node, index, user, account in rows}


def priority_of(session: Session, job: Job, *, now: datetime, half_life_s: float,
                weights: Weights) -> Priority:
    """``job``'s multifactor priority at ``now``, as a pass would weigh it."""
    _, shares = accounts.quotas_and_shares(session)
    usage = decayed_usage(session, now=now, half_life_s=half_life_s)
    return job_priority(job.spec, job.enqueued_at, now=now, usage=usage, shares=shares, weights=weights)
