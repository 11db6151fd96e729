"""Workload CSV columns for arrays and dependencies (docs/simulate.md): a row with ``array``
stands for the array's tasks, and ``depends_on`` names earlier rows' jobs or arrays in
Slurm's --dependency form (``afterok:train-1:train-2;afterany:prep``)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace

from overlay.arrays import ArrayError, parse_array, task_id
from overlay.dependencies import Dependency, Kind
from overlay.workload import SimJob

_KINDS = "|".join(k.value for k in Kind)
DEPENDS = re.compile(rf"^(?:{_KINDS})(?::[A-Za-z0-9._-]{{1,128}})+$")


def parse_depends(text: str) -> list[Dependency]:
    """``afterok:a:b;afterany:c`` (``;`` or ``,`` between kinds) -> dependencies. Raises ValueError."""
    out: list[Dependency] = []
    for part in filter(None, re.split(r"[;,]", text)):
        if not DEPENDS.match(part):
            raise ValueError(f"{part!r} is not KIND:ID[:ID...] with KIND one of {', '.join(Kind)}")
        kind, *targets = part.split(":")
        out += [Dependency(kind=Kind(kind), target=t) for t in targets]
    return out


def expand(jobs: Sequence[SimJob],
           extras: Mapping[str, tuple[int, str, str]]) -> tuple[list[SimJob], list[str]]:
    """``jobs`` (in submit order) with each array row replaced by its tasks and each job's
    dependencies attached; and the errors, one per bad line: a bad array, a bad
    depends_on, or one naming a job or array not submitted earlier (the API refuses those)."""
    out: list[SimJob] = []
    errors: list[str] = []
    known: set[str] = set()
    for job in jobs:
        line, expression, depends = extras.get(job.job_id, (0, "", ""))
        try:
            needs = parse_depends(depends)
            unknown = sorted({d.target for d in needs} - known)
            if unknown:
                raise ValueError(f"names no earlier job or array: {', '.join(unknown)}")
            job = replace(job, depends_on=tuple(needs))
            if expression:
                tasks = parse_array(expression)
                out += [replace(job, array_limit=tasks.limit, spec=replace(
                    job.spec, job_id=task_id(job.job_id, i), array_id=job.job_id, array_index=i))
                    for i in tasks.indices]
                known.update(task_id(job.job_id, i) for i in tasks.indices)
            else:
                out.append(job)
            known.add(job.job_id)
        except (ValueError, ArrayError) as e:
            column = "array" if isinstance(e, ArrayError) else "depends_on"
            errors.append(f"line {line}: {column} {e}")
    return out, errors
