"""Preemption: which running jobs a waiting job may stop to run, and the set of them on one
node that loses the least work (after Kueue's preemption and Slurm's QOS preemption). Pure.

A waiting job may preempt a running one only if the running job is preemptible and either
runs on borrowed GPUs (beyond its account's quota: it gives them back first) or has a
priority lower by at least the gap (``PREEMPT_PRIORITY_GAP``). The waiting job must be able
to run once its victims stop: on one node, the victims' GPUs plus that node's free ones meet
its request (model, memory, selector and a job slot, as placement judges them).

Victims stop in their grace time (``PREEMPT_GRACE_S``), still holding their GPUs meanwhile.
A job whose own victims are still stopping preempts nobody else: it waits for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from itertools import combinations

from overlay.fleet import Fleet
from overlay.model import Job, JobSpec, Placement
from overlay.queueing import Queued
from overlay.quota import Admission, Admit, QuotaGate

# Exact search over the subsets of a node's candidates up to this many; beyond, greedy.
EXACT_UP_TO = 12


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """A running job as preemption sees it. ``gpu_seconds``: the work it would lose (GPUs
    held × seconds since it started)."""

    job_id: str
    attempt: int = 1
    node: str
    gpus: tuple[int, ...]
    priority: int = 0
    account: str = "default"
    borrowed: bool = False
    preemptible: bool = True
    gpu_seconds: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Stopping:
    """A preempted job still stopping on ``node``, holding ``gpus``, for the job ``for_job``."""

    job_id: str
    node: str
    gpus: tuple[int, ...]
    for_job: str


@dataclass(frozen=True, kw_only=True)
class Preemption:
    """Stop ``victims`` (all on ``node``) so that ``job_id`` can run there."""

    job_id: str
    node: str
    victims: tuple[Candidate, ...]

    @property
    def lost_gpu_seconds(self) -> float:
        return sum(v.gpu_seconds for v in self.victims)

    def describe(self) -> str:
        names = ", ".join(v.job_id for v in self.victims)
        return f"preempting {names} on {self.node}"


@dataclass(frozen=True, kw_only=True)
class AwaitStop:
    """The job's victims are still stopping: it waits for them and preempts nobody else."""

    job_id: str
    node: str
    stopping: tuple[str, ...]

    def describe(self) -> str:
        return f"waiting for {', '.join(self.stopping)} to stop on {self.node} (preempted for it)"


def current(candidates: Sequence[Candidate], admit: Admit) -> list[Candidate]:
    """``candidates`` with ``borrowed`` as it is now: a job was marked borrowed when it was
    placed beyond its account's quota, but once the account holds no more than its quota
    (its other jobs ended, or its quota grew) none of its jobs is borrowed any more. Without
    quotas (no QuotaGate) nothing is."""
    gate = admit if isinstance(admit, QuotaGate) else None
    return [c if not c.borrowed or (gate is not None and gate.over(c.account))
            else replace(c, borrowed=False) for c in candidates]


def yielding(queued: list[Job], *, now: datetime, within_s: float) -> dict[str, str]:
    """Victims whose preemptor still waits, preempted less than ``within_s`` ago: victim ->
    preemptor. A victim waits for its preemptor to start (else a victim earlier in the queue
    order would take the GPUs back and be preempted again, in turn for ever); past
    ``within_s`` (its preemptor cannot run after all), it waits no more."""
    waiting = {j.job_id for j in queued}
    return {j.job_id: j.preempted_by for j in queued
            if j.preempted_by in waiting and j.preempted_at is not None
            and now - j.preempted_at < timedelta(seconds=within_s)}


def preemptors_first(order: Callable[[Iterable[Queued]], list[Queued]],
                     preemptors: set[str]) -> Callable[[Iterable[Queued]], list[Queued]]:
    """``order`` with the jobs that preempted others ahead of the rest (in ``order``'s order)."""
    if not preemptors:
        return order

    def ordered(jobs: Iterable[Queued]) -> list[Queued]:
        found = order(jobs)
        return ([j for j in found if j.spec.job_id in preemptors]
                + [j for j in found if j.spec.job_id not in preemptors])

    return ordered


def may_preempt(job: JobSpec, victim: Candidate, *, gap: int) -> bool:
    """Whether ``job`` may stop ``victim``: preemptible, and borrowed or lower by ``gap``."""
    return victim.preemptible and victim.job_id != job.job_id and (
        victim.borrowed or victim.priority <= job.priority - gap)


def plan(job: JobSpec, fleet: Fleet, candidates: Iterable[Candidate], *, gap: int,
         stopping: Sequence[Stopping] = ()) -> Preemption | AwaitStop | None:
    """What ``job`` (which does not fit now) should do: wait for its victims still stopping
    (AwaitStop), stop the set of running jobs on one node that loses the least work
    (Preemption; ties: fewer victims, then node name), or nothing (None: no set would let it
    run). ``fleet`` holds every running job's GPUs; it is left as it was found."""
    if job.gpus <= 0:
        return None  # a CPU-only job waits for a slot, never for GPUs: it stops nobody
    usable = fleet.usable(job)
    mine = [s for s in stopping if s.for_job == job.job_id and s.node in usable]
    for node in sorted({s.node for s in mine}):
        coming = {i for s in mine if s.node == node for i in s.gpus} & usable[node]
        if len(fleet.free(node) & usable[node]) + len(coming) >= job.gpus:
            return AwaitStop(job_id=job.job_id, node=node,
                             stopping=tuple(sorted(s.job_id for s in mine if s.node == node)))
    by_node: dict[str, list[Candidate]] = {}
    for c in candidates:
        if c.node in usable and may_preempt(job, c, gap=gap) and set(c.gpus) & usable[c.node]:
            by_node.setdefault(c.node, []).append(c)
    best: Preemption | None = None
    for node in sorted(by_node):
        victims = _cheapest(job, fleet, node, by_node[node], usable[node])
        if victims is None:
            continue
        found = Preemption(job_id=job.job_id, node=node, victims=victims)
        if best is None or _cost(found) < _cost(best):
            best = found
    return best


def _cost(p: Preemption) -> tuple[float, int, str]:
    return (p.lost_gpu_seconds, len(p.victims), p.node)


def _cheapest(job: JobSpec, fleet: Fleet, node: str, candidates: list[Candidate],
              fitting: frozenset[int]) -> tuple[Candidate, ...] | None:
    """The victims on ``node`` that free enough for ``job`` at the least lost work, or None."""
    free = len(fleet.free(node) & fitting)
    need = job.gpus - free
    if need <= 0:
        return None  # its GPUs are free: it waits for something stopping nobody gives (a slot, a quota)
    ordered = sorted(candidates, key=lambda c: (c.gpu_seconds, len(c.gpus), c.job_id))
    if len(ordered) <= EXACT_UP_TO:
        sets: Iterable[tuple[Candidate, ...]] = (
            combo for k in range(1, len(ordered) + 1) for combo in combinations(ordered, k))
    else:  # greedy: the cheapest first, until enough
        sets = (tuple(ordered[:k]) for k in range(1, len(ordered) + 1))
    best: tuple[Candidate, ...] | None = None
    for combo in sets:
        if sum(len(set(c.gpus) & fitting) for c in combo) < need:
            continue
        if best is not None and _set_cost(combo) >= _set_cost(best):
            continue
        if _runs_after(job, fleet, node, combo):
            best = combo
    return best


def _set_cost(victims: Sequence[Candidate]) -> tuple[float, int]:
    return (sum(v.gpu_seconds for v in victims), len(victims))


def _runs_after(job: JobSpec, fleet: Fleet, node: str, victims: Sequence[Candidate]) -> bool:
    """Whether ``job`` could be placed on ``node`` once ``victims`` stopped (the fleet is
    told they stopped, asked, and told again they run: it ends as it began)."""
    for v in victims:
        fleet.release(node, v.gpus)
    try:
        return fleet.can_take(node, job)
    finally:
        for v in victims:
            fleet.allocate(node, v.gpus)


def choose(job: JobSpec, fleet: Fleet, candidates: Sequence[Candidate], *, gap: int, admit: Admit,
           stopping: Sequence[Stopping] = ()) -> Preemption | AwaitStop | None:
    """``plan``, then the pass's admission check (quotas) on the result: a preemption for a
    job that its own account's quota would then keep waiting is none. A job that would run
    on borrowed GPUs stops only jobs lower by ``gap``, never other borrowed work only for
    being borrowed: two borrowers would otherwise preempt each other in turn."""
    found = plan(job, fleet, candidates, gap=gap, stopping=stopping)
    if not isinstance(found, Preemption):
        return found
    verdict = admission(job, found, fleet, admit)
    if verdict is None:
        return None
    if verdict.borrowed and any(v.priority > job.priority - gap for v in found.victims):
        lower = [c for c in candidates if c.priority <= job.priority - gap]
        found = plan(job, fleet, lower, gap=gap)
        if not isinstance(found, Preemption) or admission(job, found, fleet, admit) is None:
            return None
    return found


def admission(job: JobSpec, preemption: Preemption, fleet: Fleet, admit: Admit) -> Admission | None:
    """What the pass's admission check (``overlay.quota.QuotaGate``: quotas) would say of
    ``job`` on the node once the victims stopped: admitted (maybe borrowed), or None when its
    quota would keep it waiting. Checks other than a QuotaGate admit."""
    gate = admit
    if not isinstance(gate, QuotaGate):
        return Admission()
    node, fitting = preemption.node, fleet.usable(job)[preemption.node]
    freed = sorted((fleet.free(node) | {i for v in preemption.victims for i in v.gpus}) & fitting)
    placement = Placement(node=node, gpus=tuple(freed[: job.gpus]))
    for v in preemption.victims:
        gate.release(v.account, Placement(node=v.node, gpus=v.gpus))
    try:
        verdict = gate.decide(job, placement)
    finally:
        for v in preemption.victims:
            gate.take(v.account, Placement(node=v.node, gpus=v.gpus))
    return verdict if isinstance(verdict, Admission) else None
