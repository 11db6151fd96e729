"""Queue order and the scheduling pass: who goes first, and where each queued job goes now."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol, TypeVar

from overlay.fleet import Fleet, Shape, shape_of
from overlay.gang import place_gang
from overlay.model import GangPlacement, JobSpec, NoFit, Placement
from overlay.placement import place
from overlay.policies import Policy
from overlay.quota import Admit, admit_all
from overlay.reservation import Backfill, Reservation, Running


class Queued(Protocol):
    """A job waiting for placement: ``overlay.model.Job`` and ``QueuedJob`` both are."""

    @property
    def spec(self) -> JobSpec: ...

    @property
    def enqueued_at(self) -> datetime | None: ...


@dataclass(frozen=True, kw_only=True)
class QueuedJob:
    """A spec and when it joined the queue, for callers that hold no stored Job."""

    spec: JobSpec
    enqueued_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What a pass decided for one job: a Placement to apply, or why it waits."""

    job_id: str
    outcome: Placement | NoFit
    reservation: Reservation | None = None  # the job waits, and will start by then
    borrowed: bool = False  # placed on idle GPUs beyond its account's quota (overlay.quota)


Q = TypeVar("Q", bound=Queued)


def queue_key(job: Queued) -> tuple[int, bool, datetime, str]:
    """Sort key: higher priority first, then older, then job_id; a job with no time goes last."""
    at = job.enqueued_at
    # datetime.min only ever meets another None's datetime.min: the bool decides first.
    return (-job.spec.priority, at is None, at or datetime.min, job.spec.job_id)


def queue_order(jobs: Iterable[Q]) -> list[Q]:
    """``jobs`` in the order a pass considers them: priority (high first), then age."""
    return sorted(jobs, key=queue_key)


def plan_pass(
    jobs: Iterable[Queued], fleet: Fleet, *, policy: Policy, memo: bool = True,
    running: Iterable[Running] | None = None, now: datetime | None = None,
    order: Callable[[Iterable[Queued]], list[Queued]] = queue_order, admit: Admit = admit_all,
) -> list[Decision]:
    """Decide each job in queue order, allocating each placement in ``fleet`` as it goes.

    A job that does not fit waits without holding back smaller jobs behind it (backfill).
    Given ``running`` (the jobs holding GPUs, with their latest ends) and ``now``, the first
    job that does not fit but could some day gets a reservation (``overlay.reservation``):
    a later job goes ahead of it only if it ends by the reserved start or keeps off the
    reserved GPUs, and the reserved job's reason names the node and start. Without
    ``running``, no reservation: any later job that fits goes ahead.
    With ``memo``, a job whose shape already failed in this pass, against capacity that has
    not changed since, gets that NoFit again without asking the policy: the result is the
    same for a deterministic policy, and the tail of a long queue against a full fleet is
    cheap. ``order`` is the queue order (``overlay.fairshare.multifactor_order`` is another)
    and ``admit`` checks each placement before it is applied (``overlay.quota.QuotaGate``):
    a job it refuses waits with its reason. Raises what ``place`` raises, and ValueError
    for ``running`` without ``now``.
    """
    if running is not None and now is None:
        raise ValueError("backfill reservations need now")
    backfill = None if running is None or now is None else Backfill(fleet, running, now=now)
    failed: dict[tuple[int, Shape], tuple[int, NoFit]] = {}
    decisions: list[Decision] = []
    try:
        for job in order(jobs):
            decisions.append(_decide(job.spec, fleet, policy, failed if memo else None, backfill, admit))
    finally:
        if backfill is not None:
            backfill.close()
    return decisions


def _decide(spec: JobSpec, fleet: Fleet, policy: Policy,
            failed: dict[tuple[int, Shape], tuple[int, NoFit]] | None, backfill: Backfill | None,
            admit: Admit = admit_all) -> Decision:
    if backfill is not None:
        backfill.before(spec)
    if spec.nodes > 1:
        return _decide_gang(spec, fleet, policy, admit)
    key = (spec.gpus, shape_of(spec))
    seen = failed.get(key) if failed is not None else None
    if seen is not None and seen[0] == fleet.stamp(key[1]):
        nofit = seen[1]
    else:
        outcome = place(spec, fleet, policy=policy)
        if isinstance(outcome, Placement):
            verdict = admit(spec, outcome)
            if isinstance(verdict, NoFit):
                return Decision(job_id=spec.job_id, outcome=verdict)
            fleet.allocate(outcome.node, outcome.gpus)
            if backfill is not None:
                backfill.placed(spec, outcome)
            return Decision(job_id=spec.job_id, outcome=outcome, borrowed=verdict.borrowed)
        nofit = outcome
        if failed is not None:
            failed[key] = (fleet.stamp(key[1]), nofit)
    if backfill is None:
        return Decision(job_id=spec.job_id, outcome=nofit)
    reason, reservation = backfill.blocked(spec, nofit)
    return Decision(job_id=spec.job_id, outcome=reason, reservation=reservation)


def _decide_gang(spec: JobSpec, fleet: Fleet, policy: Policy, admit: Admit) -> Decision:
    """A gang job: every part placed and allocated, or none. It gets no backfill reservation
    (one reservation covers one node) and its shape is not memoised (the node count differs)."""
    outcome = place_gang(spec, fleet, policy=policy)
    if isinstance(outcome, NoFit):
        return Decision(job_id=spec.job_id, outcome=outcome)
    verdict = admit(gang_total(spec), all_gpus(outcome))
    if isinstance(verdict, NoFit):
        return Decision(job_id=spec.job_id, outcome=verdict)
    for part in outcome.parts:
        fleet.allocate(part.node, part.gpus)
    return Decision(job_id=spec.job_id, outcome=outcome, borrowed=verdict.borrowed)


def gang_total(spec: JobSpec) -> JobSpec:
    """A gang job as quotas count it: all its parts' GPUs at once."""
    return replace(spec, gpus=spec.gpus * spec.nodes, nodes=1)


def all_gpus(gang: GangPlacement) -> Placement:
    """A gang placement as quotas count it: rank 0's node (whose GPU model every part
    matches) with as many GPUs as all the parts hold."""
    gpus = tuple(i for part in gang.parts for i in part.gpus)
    return Placement(node=gang.node, gpus=gpus)
