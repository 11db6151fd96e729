"""Job dependencies, purely: Slurm's ``afterok``/``afterany``/``afternotok`` over jobs and
arrays, what a waiting job's dependencies' states mean for it, and cycles among them."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from overlay.states import JobState


class Kind(enum.StrEnum):
    AFTEROK = "afterok"  # start once it ended DONE; never if it FAILED or was CANCELLED
    AFTERANY = "afterany"  # start once it ended, however
    AFTERNOTOK = "afternotok"  # start once it ended FAILED or CANCELLED; never if DONE


@dataclass(frozen=True, kw_only=True)
class Dependency:
    kind: Kind
    target: str  # a job id, or an array id: all of its tasks


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """Where a dependency's target stands: how many of its jobs (one, or an array's tasks)
    have not ended, and how many ended in each way. ``exists`` is False for a target that
    is gone (removed by retention before the dependent was judged)."""

    unfinished: int = 0
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    exists: bool = True

    @classmethod
    def of(cls, counts: Mapping[JobState, int]) -> Outcome:
        return cls(unfinished=sum(n for s, n in counts.items() if not s.terminal),
                   done=counts.get(JobState.DONE, 0), failed=counts.get(JobState.FAILED, 0),
                   cancelled=counts.get(JobState.CANCELLED, 0))

    @property
    def bad(self) -> str | None:
        """How it went wrong, if some job of it ended other than DONE."""
        return "FAILED" if self.failed else "CANCELLED" if self.cancelled else None


@dataclass(frozen=True, kw_only=True)
class Ready:
    """Every dependency is met: the job may be placed."""


@dataclass(frozen=True, kw_only=True)
class Wait:
    reason: str


@dataclass(frozen=True, kw_only=True)
class Never:
    """A dependency can no longer be met: the job is to end CANCELLED with ``reason``."""

    reason: str


Verdict = Ready | Wait | Never
MISSING = Outcome(exists=False)
NEVER = "dependency never satisfied"


def judge(deps: Sequence[Dependency], outcomes: Mapping[str, Outcome]) -> Verdict:
    """What ``deps`` allow now, given each target's outcome (missing: gone). Never wins
    over Wait: a job one of whose dependencies failed is cancelled at once."""
    waiting: list[str] = []
    for dep in deps:
        outcome = outcomes.get(dep.target, MISSING)
        if not outcome.exists:
            return Never(reason=f"{NEVER}: {dep.target} no longer exists")
        state = _check(dep.kind, outcome)
        if state is Never:
            end = outcome.bad if dep.kind is Kind.AFTEROK else "DONE"
            return Never(reason=f"{NEVER}: {dep.target} {end}")
        if state is Wait:
            waiting.append(f"{dep.target} ({dep.kind})")
    if waiting:
        return Wait(reason=waiting_reason(waiting))
    return Ready()


def _check(kind: Kind, outcome: Outcome) -> type[Verdict]:
    if kind is Kind.AFTEROK:
        if outcome.bad:
            return Never
        return Wait if outcome.unfinished else Ready
    if outcome.unfinished:
        return Wait
    if kind is Kind.AFTERNOTOK and not outcome.bad:
        return Never  # every job of it ended DONE
    return Ready


def waiting_reason(waiting: Sequence[str], *, shown: int = 3) -> str:
    more = len(waiting) - shown
    return "waiting for " + ", ".join(waiting[:shown]) + (f" and {more} more" if more > 0 else "")


def parse(body: Mapping[str, Iterable[str]]) -> list[Dependency]:
    """``{"afterok": ["a", "b"], ...}`` -> dependencies, each (kind, target) once, in order."""
    out: dict[tuple[Kind, str], Dependency] = {}
    for kind, targets in body.items():
        for target in targets:
            out.setdefault((Kind(kind), target), Dependency(kind=Kind(kind), target=target))
    return list(out.values())


def find_cycle(new: Iterable[str], targets: Iterable[str],
               depends_of: Callable[[Sequence[str]], Mapping[str, Sequence[str]]]) -> list[str] | None:
    """A path from one of ``targets`` back to one of ``new`` (the ids being submitted) along
    what existing jobs depend on, or None. ``depends_of(ids)`` answers, for a batch of
    ids, what each depends on (one query per level of the graph, not per job)."""
    goal = set(new)
    parent: dict[str, str | None] = {}
    level = []
    for t in targets:
        if t in goal:
            return [t]
        if t not in parent:
            parent[t] = None
            level.append(t)
    while level:
        edges = depends_of(level)
        following = []
        for src in level:
            for dst in edges.get(src, ()):
                if dst in parent:
                    continue
                parent[dst] = src
                if dst in goal:
                    return _path(parent, dst)
                following.append(dst)
        level = following
    return None


def _path(parent: Mapping[str, str | None], end: str) -> list[str]:
    path = [end]
    while (up := parent[path[-1]]) is not None:
        path.append(up)
    return path[::-1]
