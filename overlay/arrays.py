"""Job arrays, purely: Slurm's ``--array`` syntax (``0-999%50``, ``1,3,5-9:2``) expanded to
task indices, a task's id, and the ``%N`` limit a scheduling pass applies."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from overlay.model import JobSpec, NoFit, Placement
from overlay.quota import Admission, Admit

# Task indices are 0..MAX_INDEX, as Slurm's MaxArraySize bounds them: so an array never has
# more than MAX_TASKS tasks, and the JSON Schema pattern below states the whole rule.
MAX_INDEX = 99_999
MAX_TASKS = MAX_INDEX + 1
MAX_LIMIT = MAX_TASKS
MAX_EXPRESSION = 16_384
# A task id is "<array_id>_<index>" in a job id of at most 128 characters.
MAX_ARRAY_ID = 128 - len(f"_{MAX_INDEX}")
_NUM = r"\d{1,5}"
_ITEM = rf"{_NUM}(?:-{_NUM}(?::0*[1-9]\d{{0,4}})?)?"
PATTERN = rf"^{_ITEM}(?:,{_ITEM})*(?:%0*[1-9]\d{{0,5}})?$"
_PATTERN = re.compile(PATTERN)


class ArrayError(ValueError):
    """An ``array`` expression that names no tasks or breaks the syntax; the message says why."""


@dataclass(frozen=True, kw_only=True)
class ArraySpec:
    """The tasks of an array (sorted, distinct indices) and how many may run at once."""

    indices: tuple[int, ...]
    limit: int | None = None


def parse_array(text: str) -> ArraySpec:
    """``"0-999%50"`` -> indices 0..999, limit 50. Items are comma-separated: ``N``,
    ``A-B`` or ``A-B:STEP``; a repeated index counts once. Raises ArrayError."""
    if len(text) > MAX_EXPRESSION or not _PATTERN.match(text):
        raise ArrayError(f"not an array expression like 0-99, 1,3,5-9:2 or 0-999%50 (indices 0..{MAX_INDEX})")
    body, _, limit = text.partition("%")
    indices: set[int] = set()
    for item in body.split(","):
        bounds, _, step = item.partition(":")
        first, _, last = bounds.partition("-")
        lo, hi = int(first), int(last or first)
        if hi < lo:
            raise ArrayError(f"range {bounds} ends before it starts")
        indices.update(range(lo, hi + 1, int(step or 1)))
    return ArraySpec(indices=tuple(sorted(indices)), limit=int(limit) if limit else None)


def task_id(array_id: str, index: int) -> str:
    return f"{array_id}_{index}"


def limit_reason(array_id: str, running: int) -> str:
    return f"array {array_id} at its limit: {running} running"


@dataclass(frozen=True, kw_only=True)
class ArrayLoad:
    """An array's ``%N`` limit and how many of its tasks hold GPUs or a slot now."""

    limit: int
    running: int


def hold_back(queued: Iterable[JobSpec], loads: Mapping[str, ArrayLoad]) -> dict[str, str]:
    """Which queued tasks a pass keeps out: of each limited array, all but the first
    ``limit - running`` in index order, each with the limit's reason (job id -> reason).
    Tasks of one array share priority, user and account, so index order is their queue
    order; cutting them here keeps a 100,000-task array from costing a pass 100,000
    placements."""
    seen: dict[str, int] = {}
    out: dict[str, str] = {}
    for spec in sorted((s for s in queued if s.array_id in loads), key=lambda s: (s.array_id, s.array_index)):
        assert spec.array_id is not None
        load = loads[spec.array_id]
        n = seen.get(spec.array_id, 0)
        seen[spec.array_id] = n + 1
        if load.running + n >= load.limit:
            out[spec.job_id] = limit_reason(spec.array_id, load.limit)
    return out


class ArrayGate:
    """``plan_pass``'s admission check with arrays' ``%N`` limits in front of another check:
    a task of an array at its limit waits; each task admitted counts toward its array."""

    def __init__(self, admit: Admit, loads: Mapping[str, ArrayLoad]) -> None:
        self.admit = admit
        self.running = {a: load.running for a, load in loads.items()}
        self.limits = {a: load.limit for a, load in loads.items()}

    def __call__(self, spec: JobSpec, placement: Placement) -> Admission | NoFit:
        array = spec.array_id
        if array is not None and array in self.limits and self.running[array] >= self.limits[array]:
            return NoFit(reason=limit_reason(array, self.running[array]))
        verdict = self.admit(spec, placement)
        if array is not None and array in self.running and not isinstance(verdict, NoFit):
            self.running[array] += 1
        return verdict
