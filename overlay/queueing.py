"""Queue order and the scheduling pass: who goes first, and where each queued job goes now."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from overlay.fleet import Fleet, Shape, shape_of
from overlay.model import JobSpec, NoFit, Placement
from overlay.placement import place
from overlay.policies import Policy


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
    jobs: Iterable[Queued], fleet: Fleet, *, policy: Policy, memo: bool = True
) -> list[Decision]:
    """Decide each job in queue order, allocating each placement in ``fleet`` as it goes.

    A job that does not fit waits without holding back smaller jobs behind it (backfill).
    With ``memo``, a job whose shape already failed in this pass, against capacity that has
    not changed since, gets that NoFit again without asking the policy: the result is the
    same for a deterministic policy, and the tail of a long queue against a full fleet is
    cheap. Raises what ``place`` raises.
    """
    failed: dict[tuple[int, Shape], tuple[int, NoFit]] = {}
    decisions: list[Decision] = []
    for job in queue_order(jobs):
        spec = job.spec
        key = (spec.gpus, shape_of(spec))
        seen = failed.get(key) if memo else None
        if seen is not None and seen[0] == fleet.stamp(key[1]):
            decisions.append(Decision(job_id=spec.job_id, outcome=seen[1]))
            continue
        outcome = place(spec, fleet, policy=policy)
        if isinstance(outcome, Placement):
            fleet.allocate(outcome.node, outcome.gpus)
        elif memo:
            failed[key] = (fleet.stamp(key[1]), outcome)
        decisions.append(Decision(job_id=spec.job_id, outcome=outcome))
    return decisions
