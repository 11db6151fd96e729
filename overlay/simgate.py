"""What keeps a simulated job out of the queue, as the real pass keeps it out of the plan
(overlay/store/holds.py): dependencies not met (overlay.dependencies: the same rules), and
arrays at their ``%N`` limit. Pure; ``overlay.simulation`` asks it on each arrival and end.

A task of a limited array enters the simulated queue only while fewer than its limit of the
array's tasks are queued or running there: the same tasks, in index order, that the real
pass would consider (the first ``limit - running`` of those waiting).
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict

from overlay.dependencies import Never, Outcome, Ready, judge
from overlay.states import JobState
from overlay.workload import SimJob


class Gate:
    """Jobs parked on dependencies or on their array's limit, and the outcome of each job
    and array so far (every simulated job that runs ends DONE)."""

    def __init__(self) -> None:
        self.state: dict[str, JobState] = {}
        self.arrays: dict[str, Counter[JobState]] = defaultdict(Counter)
        self.waiting_on: dict[str, set[str]] = defaultdict(set)  # target -> parked dependents
        self.parked: dict[str, SimJob] = {}
        self.active: Counter[str] = Counter()  # an array's tasks queued or running
        self.array_parked: dict[str, list[tuple[int, str, SimJob]]] = defaultdict(list)
        self.cancelled = 0

    def arrive(self, job: SimJob) -> list[SimJob]:
        """The jobs to enqueue now that ``job`` arrived: it, or none (parked or cancelled)."""
        self._set(job, JobState.QUEUED)
        if not job.depends_on:
            return self._admit(job)
        return self._judge(job)

    def ended(self, job: SimJob) -> list[SimJob]:
        """The jobs to enqueue now that ``job`` ended DONE: dependents now met, the next tasks."""
        self._set(job, JobState.DONE)
        out: list[SimJob] = []
        array = job.spec.array_id
        if array is not None and job.array_limit:
            self.active[array] -= 1
            out += self._release(array)
        for target in (job.job_id, array):
            if target is not None:
                out += self._wake(target)
        return out

    @property
    def held(self) -> int:
        """Jobs still parked (a dependency that never ran: it could not fit anywhere)."""
        return len(self.parked) + sum(len(p) for p in self.array_parked.values())

    def _set(self, job: SimJob, state: JobState) -> None:
        before = self.state.get(job.job_id)
        self.state[job.job_id] = state
        if job.spec.array_id is not None:
            counts = self.arrays[job.spec.array_id]
            if before is not None:
                counts[before] -= 1
            counts[state] += 1

    def _outcome(self, target: str) -> Outcome | None:
        if target in self.state:
            return Outcome.of({self.state[target]: 1})
        if target in self.arrays:
            return Outcome.of(self.arrays[target])
        return None

    def _judge(self, job: SimJob) -> list[SimJob]:
        outcomes = {d.target: o for d in job.depends_on if (o := self._outcome(d.target)) is not None}
        verdict = judge(job.depends_on, outcomes)
        if isinstance(verdict, Ready):
            self.parked.pop(job.job_id, None)
            return self._admit(job)
        if isinstance(verdict, Never):
            self.parked.pop(job.job_id, None)
            self.cancelled += 1
            self._set(job, JobState.CANCELLED)
            return [j for t in (job.job_id, job.spec.array_id) if t is not None for j in self._wake(t)]
        self.parked[job.job_id] = job
        for d in job.depends_on:
            self.waiting_on[d.target].add(job.job_id)
        return []

    def _wake(self, target: str) -> list[SimJob]:
        out: list[SimJob] = []
        for job_id in sorted(self.waiting_on.get(target, ())):
            if job_id in self.parked:
                out += self._judge(self.parked[job_id])
        return out

    def _admit(self, job: SimJob) -> list[SimJob]:
        array = job.spec.array_id
        if array is None or not job.array_limit:
            return [job]
        heapq.heappush(self.array_parked[array], (job.spec.array_index or 0, job.job_id, job))
        return self._release(array)

    def _release(self, array: str) -> list[SimJob]:
        out = []
        parked = self.array_parked[array]
        while parked and self.active[array] < (parked[0][2].array_limit or 0):
            out.append(heapq.heappop(parked)[2])
            self.active[array] += 1
        return out

