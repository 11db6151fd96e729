"""Fair share: GPU-seconds decayed over a half-life, and the multifactor priority that orders
the queue by them (after Slurm's priority/multifactor; docs/architecture.md).

Pure: ``now``, the usage records, the shares and the weights are all arguments.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from overlay.model import JobSpec
from overlay.queueing import Queued, queue_key

HALF_LIFE_S = 7 * 86400.0  # FAIRSHARE_HALF_LIFE's default: a week

UserKey = tuple[str, str]  # (account, user)
Q = TypeVar("Q", bound=Queued)


@dataclass(frozen=True, kw_only=True)
class UsageRecord:
    """GPUs an account's user held from ``start`` to ``end`` (None: still holding them)."""

    account: str
    user: str
    gpus: int
    start: datetime
    end: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class Usage:
    """Decayed GPU-seconds at ``at``, per account and per (account, user)."""

    at: datetime
    accounts: Mapping[str, float] = field(default_factory=dict)
    users: Mapping[UserKey, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.accounts.values())


@dataclass(frozen=True, kw_only=True)
class Weights:
    """How much each factor counts (Slurm's PriorityWeight*). A job's priority is
    ``priority × its own priority + age × min(age / max_age_s, 1) + fairshare × F_account
    + user × F_user``."""

    priority: float = 100.0  # per point of the job's own priority (-1000..1000)
    age: float = 1000.0
    fairshare: float = 10000.0
    user: float = 100.0  # small: it orders an account's users, not the accounts
    max_age_s: float = 7 * 86400.0


@dataclass(frozen=True, kw_only=True)
class Priority:
    """A job's multifactor priority and its weighted parts (``value`` is their sum), with the
    age and fair-share factors (0..1) they came from."""

    value: float
    priority: float
    age: float
    fairshare: float
    user: float
    age_factor: float
    fairshare_factor: float
    user_factor: float


# -- usage ---------------------------------------------------------------------------------------

def decayed_gpu_seconds(gpus: int, *, since_s: float, until_s: float, half_life_s: float) -> float:
    """GPU-seconds of ``gpus`` held from ``since_s`` to ``until_s`` seconds ago, each second
    weighted 2^(-its age / half-life): the integral, so the result does not depend on how
    often anyone looks. Raises ValueError unless ``half_life_s`` > 0."""
    if not half_life_s > 0:
        raise ValueError("the fair-share half-life must be > 0")
    if since_s <= until_s:
        return 0.0
    if math.isinf(half_life_s):
        return gpus * (since_s - until_s)
    scale = half_life_s / math.log(2)
    return gpus * scale * (2.0 ** (-until_s / half_life_s) - 2.0 ** (-since_s / half_life_s))


def fold_usage(records: Iterable[UsageRecord], *, now: datetime, half_life_s: float = HALF_LIFE_S) -> Usage:
    """The records' decayed GPU-seconds at ``now``. A running record (no end) counts up to
    ``now``; time after ``now`` does not count. Raises ValueError for a bad half-life."""
    accounts: dict[str, float] = {}
    users: dict[UserKey, float] = {}
    for r in records:
        end = now if r.end is None or r.end > now else r.end
        used = decayed_gpu_seconds(r.gpus, since_s=(now - r.start).total_seconds(),
                                   until_s=(now - end).total_seconds(), half_life_s=half_life_s)
        accounts[r.account] = accounts.get(r.account, 0.0) + used
        users[r.account, r.user] = users.get((r.account, r.user), 0.0) + used
    return Usage(at=now, accounts=accounts, users=users)


def advance(usage: Usage, *, now: datetime, running: Mapping[UserKey, int],
            half_life_s: float = HALF_LIFE_S) -> Usage:
    """``usage`` carried to ``now``: decayed, plus ``running``'s GPUs (per (account, user))
    held throughout since ``usage.at``. The same as folding the records again, at the cost
    of the accounts, not of the records. Raises ValueError if ``now`` is before ``usage.at``
    or the half-life is not > 0."""
    elapsed = (now - usage.at).total_seconds()
    if elapsed < 0:
        raise ValueError("usage cannot be carried back in time")
    if not half_life_s > 0:
        raise ValueError("the fair-share half-life must be > 0")
    keep = 2.0 ** (-elapsed / half_life_s) if not math.isinf(half_life_s) else 1.0
    users = {key: value * keep for key, value in usage.users.items()}
    for key, gpus in running.items():
        users[key] = users.get(key, 0.0) + decayed_gpu_seconds(
            gpus, since_s=elapsed, until_s=0.0, half_life_s=half_life_s)
    accounts: dict[str, float] = {}
    for (account, _), value in users.items():
        accounts[account] = accounts.get(account, 0.0) + value
    return Usage(at=now, accounts=accounts, users=users)


# -- the fair-share factor -------------------------------------------------------------------------

def normalized_share(shares: Mapping[str, float], account: str) -> float:
    """``account``'s part of all shares (0..1). With no shares configured every account has
    the same share, which callers see as 1: usage alone then decides."""
    if not shares:
        return 1.0
    total = sum(shares.values())
    return shares.get(account, 0.0) / total if total > 0 else 0.0


def usage_ratio(usage: Usage, shares: Mapping[str, float], account: str) -> float:
    """Slurm's U/S for ``account``: its part of all decayed usage over its part of all shares
    (0 with no usage; infinite for usage without a share)."""
    total = usage.total
    used = usage.accounts.get(account, 0.0) / total if total > 0 else 0.0
    if not shares and total > 0:  # equal shares: S = 1 / the accounts that used anything
        return used * sum(1 for value in usage.accounts.values() if value > 0)
    share = normalized_share(shares, account)
    if used == 0:
        return 0.0
    return used / share if share > 0 else math.inf


def fairshare_factor(usage: Usage, shares: Mapping[str, float], *, account: str) -> float:
    """Slurm's classic F = 2^(-U/S) for ``account``, in 0..1: 1 with no usage, 0.5 when its
    part of the usage matches its part of the shares, less above it."""
    return 2.0 ** -usage_ratio(usage, shares, account)


def user_factor(usage: Usage, *, account: str, user: str) -> float:
    """2^(-u) for ``user`` within ``account``, u being their usage over an equal part of the
    account's among its users (those with usage, and this one): 0.5 at their part.

    It orders an account's users among themselves; accounts are ordered by the account's
    factor, so that an account with many users gets its share and no more (Slurm's Fair
    Tree ranks accounts before users for the same reason).
    """
    account_used = usage.accounts.get(account, 0.0)
    if account_used <= 0:
        return 1.0
    users = {u for (a, u), value in usage.users.items() if a == account and value > 0} | {user}
    return 2.0 ** -(usage.users.get((account, user), 0.0) / account_used * len(users))


# -- the priority ----------------------------------------------------------------------------------

def age_factor(enqueued_at: datetime | None, *, now: datetime, max_age_s: float) -> float:
    """Time queued over ``max_age_s``, capped at 1 (0 for a job with no enqueue time)."""
    if enqueued_at is None:
        return 0.0
    if max_age_s <= 0:
        return 1.0
    return min(max((now - enqueued_at).total_seconds(), 0.0) / max_age_s, 1.0)


def job_priority(spec: JobSpec, enqueued_at: datetime | None, *, now: datetime, usage: Usage,
                 shares: Mapping[str, float], weights: Weights = Weights()) -> Priority:
    """``spec``'s multifactor priority at ``now`` and its parts (``Weights`` says how)."""
    age = age_factor(enqueued_at, now=now, max_age_s=weights.max_age_s)
    fair = fairshare_factor(usage, shares, account=spec.account)
    mine = user_factor(usage, account=spec.account, user=spec.user)
    parts = (weights.priority * spec.priority, weights.age * age, weights.fairshare * fair,
             weights.user * mine)
    return Priority(value=sum(parts), priority=parts[0], age=parts[1], fairshare=parts[2], user=parts[3],
                    age_factor=age, fairshare_factor=fair, user_factor=mine)


def multifactor_order(*, now: datetime, usage: Usage, shares: Mapping[str, float],
                      weights: Weights = Weights()) -> Callable[[Iterable[Q]], list[Q]]:
    """A queue order for ``plan_pass``: highest multifactor priority first, ties in
    ``queue_key`` order (own priority, age, job_id)."""
    def order(jobs: Iterable[Q]) -> list[Q]:
        factors: dict[UserKey, float] = {}  # the weighted fair-share parts, per account and user

        def key(job: Q) -> tuple[float, tuple[int, bool, datetime, str]]:
            spec = job.spec
            fair = factors.get((spec.account, spec.user))
            if fair is None:
                fair = factors[spec.account, spec.user] = (
                    weights.fairshare * fairshare_factor(usage, shares, account=spec.account)
                    + weights.user * user_factor(usage, account=spec.account, user=spec.user))
            age = age_factor(job.enqueued_at, now=now, max_age_s=weights.max_age_s)
            value = weights.priority * spec.priority + weights.age * age + fair
            return (-value, queue_key(job))

        return sorted(jobs, key=key)

    return order
