"""Quotas: the GPUs each account is guaranteed at once, and whether a placement keeps within
its account's quota, borrows idle GPUs beyond it, or waits (after Kueue's nominal quota and
cohort borrowing).

Pure. A ``QuotaGate`` is the ``admit`` check of ``overlay.queueing.plan_pass``: it keeps the
count of GPUs each account holds, so one gate serves one pass (or a simulation that tells
it of every release).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from overlay.model import JobSpec, NodeSnapshot, NodeState, NoFit, Placement

ALL = ""  # the limit key of an account's quota over every model


@dataclass(frozen=True, kw_only=True)
class Quota:
    """An account's guaranteed GPUs at once: ``gpus`` over all models (None: no limit), and
    per model, keyed by a case-insensitive part of the GPU name (``{"h100": 4}``)."""

    gpus: int | None = None
    models: Mapping[str, int] = field(default_factory=dict)

    def limits(self) -> dict[str, int]:
        """Limit key (ALL or a lowercased model) -> GPUs."""
        out = {ALL: self.gpus} if self.gpus is not None else {}
        return out | {model.lower(): gpus for model, gpus in self.models.items()}


@dataclass(frozen=True, kw_only=True)
class Admission:
    """The check's yes; ``borrowed`` when the job runs on idle GPUs beyond its quota."""

    borrowed: bool = False


ADMITTED = Admission()


class Admit(Protocol):
    """``plan_pass``'s admission check: called once per placement it is about to apply."""

    def __call__(self, spec: JobSpec, placement: Placement) -> Admission | NoFit: ...


def admit_all(spec: JobSpec, placement: Placement) -> Admission:
    """No quotas: every placement is admitted."""
    return ADMITTED


class QuotaGate:
    """Quotas over one fleet, and the GPUs each account holds and the fleet has free.

    Calling it decides one placement and, when it admits it, counts the GPUs as taken: the
    caller promises to apply what it admits (``plan_pass`` does), and to ``release`` it
    when the job ends.
    """

    def __init__(self, quotas: Mapping[str, Quota], nodes: Iterable[NodeSnapshot],
                 held: Iterable[tuple[str, Placement]] = ()) -> None:
        """``nodes`` as the pass sees them (taken GPUs are not free); ``held``: the
        (account, placement) of each job holding GPUs now."""
        self.limits = {account: q.limits() for account, q in quotas.items()}
        self.names: dict[tuple[str, int], str] = {}
        self.free: Counter[str] = Counter()  # lowercased GPU name -> free GPUs
        for node in nodes:
            if node.state is not NodeState.ONLINE:
                continue
            for gpu in node.gpus:
                self.names[node.name, gpu.index] = gpu.name.lower()
                if gpu.index not in node.taken:
                    self.free[gpu.name.lower()] += 1
        self.held: Counter[tuple[str, str]] = Counter()  # (account, limit key) -> GPUs
        for account, placement in held:
            self._count(account, placement, +1)

    def __call__(self, spec: JobSpec, placement: Placement) -> Admission | NoFit:
        verdict = self.decide(spec, placement)
        if isinstance(verdict, Admission):
            self.take(spec.account, placement)
        return verdict

    def take(self, account: str, placement: Placement) -> None:
        """``account``'s job holds ``placement``'s GPUs (undoes ``release``)."""
        self._count(account, placement, +1)
        self.free.subtract(self._name(node=placement.node, index=i) for i in placement.gpus)

    def release(self, account: str, placement: Placement) -> None:
        """``account``'s job on ``placement`` ended: its GPUs are free again."""
        self._count(account, placement, -1)
        self.free.update(self._name(node=placement.node, index=i) for i in placement.gpus)

    def decide(self, spec: JobSpec, placement: Placement) -> Admission | NoFit:
        """Within quota: admitted. Over it: borrowed if the idle GPUs, less what every other
        account's quota still guarantees it, cover the job; else a NoFit saying which quota."""
        if not placement.gpus:
            return ADMITTED  # a job without GPUs takes nothing any quota counts
        name = self._name(node=placement.node, index=placement.gpus[0])
        borrowed = False
        for key, limit in self.limits.get(spec.account, {}).items():
            if key not in name:
                continue
            held = self.held[spec.account, key]
            if held + spec.gpus <= limit:
                continue
            if not spec.preemptible:  # borrowed GPUs are given back by preemption: it may not
                return _at_quota(spec, key, held=held, limit=limit, note="a job that is not preemptible "
                                                                          "may not borrow")
            if self._idle(key) - self._guaranteed(key, besides=spec.account) < spec.gpus:
                return _at_quota(spec, key, held=held, limit=limit)
            borrowed = True
        return Admission(borrowed=True) if borrowed else ADMITTED

    def over(self, account: str) -> bool:
        """Whether ``account`` holds more than one of its quotas now (some of its work borrows)."""
        return any(self.held[account, key] > limit for key, limit in self.limits.get(account, {}).items())

    def holding(self, account: str, key: str = ALL) -> int:
        """GPUs ``account`` holds now, of every model (ALL) or of one limit key's."""
        return self.held[account, key]

    def _idle(self, key: str) -> int:
        return sum(count for name, count in self.free.items() if key in name)

    def _guaranteed(self, key: str, *, besides: str) -> int:
        """GPUs of ``key`` other accounts are owed: their quota not yet in use."""
        return sum(max(limits[key] - self.held[account, key], 0)
                   for account, limits in self.limits.items() if account != besides and key in limits)

    def _count(self, account: str, placement: Placement, sign: int) -> None:
        name = self._name(node=placement.node, index=placement.gpus[0]) if placement.gpus else ""
        for key in {ALL, *self.limits.get(account, {})}:
            if key in name:
                self.held[account, key] += sign * len(placement.gpus)

    def _name(self, *, node: str, index: int) -> str:
        return self.names.get((node, index), "")


def _at_quota(spec: JobSpec, key: str, *, held: int, limit: int, note: str = "") -> NoFit:
    which = f"its {key} quota" if key else "its quota"
    needs = "" if held >= limit else f" (the job needs {spec.gpus})"
    why = f"; {note}" if note else ""
    return NoFit(reason=f"account {spec.account} at {which}: {held} of {limit} GPUs{needs}{why}",
                 details={"account": spec.account, "model": key, "held": held, "quota": limit,
                          "gpus": spec.gpus})
