"""A backlog: the waiting jobs of one account, user, GPU count and shape, taken in
multifactor order (``overlay.fairshare``) without sorting them all at every look. The
simulator's fair-share passes use it (``overlay.simulation``).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import datetime

from overlay.fairshare import Weights, age_factor
from overlay.model import Placement
from overlay.queueing import queue_key
from overlay.workload import SimJob

QueueKey = tuple[int, bool, datetime, str]


class Backlog:
    """Waiting jobs of one account, user, GPU count and shape, in multifactor order.

    Their fair share is the same, so their own priority and age order them: a heap of the
    jobs whose age still grows (an order time does not change) and one of those at the
    maximum age, merged at each look.
    """

    __slots__ = ("arrived", "capped", "gpus", "size", "weights", "where", "young")

    def __init__(self, gpus: int, weights: Weights) -> None:
        self.gpus, self.weights, self.size = gpus, weights, 0
        self.young: list[tuple[float, QueueKey, SimJob]] = []
        self.capped: list[tuple[float, QueueKey, SimJob]] = []
        self.arrived: deque[SimJob] = deque()  # submit order: the next to reach the maximum age
        self.where: dict[str, bool] = {}  # job_id -> capped; a job placed is not here

    def push(self, job: SimJob) -> None:
        heapq.heappush(self.young, (self._young_key(job), queue_key(job), job))
        self.arrived.append(job)
        self.where[job.spec.job_id] = False
        self.size += 1

    def take(self, n: int, at: datetime) -> list[SimJob]:
        """The first ``n`` at ``at``, out of the backlog until ``put_back``."""
        while self.arrived and age_factor(self.arrived[0].enqueued_at, now=at,
                                          max_age_s=self.weights.max_age_s) >= 1.0:
            job = self.arrived.popleft()
            if self.where.get(job.spec.job_id) is False:
                self.where[job.spec.job_id] = True
                heapq.heappush(self.capped, (-self.weights.priority * job.spec.priority, queue_key(job), job))
        out: list[SimJob] = []
        while len(out) < n:
            young, capped = self._head(self.young, False), self._head(self.capped, True)
            if young is None or capped is None:
                if young is None and capped is None:
                    break
                pick = self.young if capped is None else self.capped
            else:
                pick = self.young if self._key(young, at) <= self._key(capped, at) else self.capped
            out.append(heapq.heappop(pick)[2])
        return out

    def put_back(self, jobs: Iterable[SimJob], placed: Mapping[str, Placement]) -> None:
        """Return what ``take`` gave, less the jobs ``placed``."""
        for job in jobs:
            if job.spec.job_id in placed:
                del self.where[job.spec.job_id]
                self.size -= 1
                continue
            if self.where[job.spec.job_id]:
                heapq.heappush(self.capped, (-self.weights.priority * job.spec.priority, queue_key(job), job))
            else:
                heapq.heappush(self.young, (self._young_key(job), queue_key(job), job))

    def _young_key(self, job: SimJob) -> float:
        # -(priority part + age part) less the age part's growth, which all young jobs share
        w = self.weights
        growth = w.age * job.submit_s / w.max_age_s if w.max_age_s > 0 else 0.0
        return -(w.priority * job.spec.priority - growth)

    def _head(self, heap: list[tuple[float, QueueKey, SimJob]], capped: bool) -> SimJob | None:
        while heap and self.where.get(heap[0][2].spec.job_id) is not capped:
            heapq.heappop(heap)  # moved to the other heap since
        return heap[0][2] if heap else None

    def _key(self, job: SimJob, at: datetime) -> tuple[float, QueueKey]:
        w = self.weights
        age = age_factor(job.enqueued_at, now=at, max_age_s=w.max_age_s)
        return (-(w.priority * job.spec.priority + w.age * age), queue_key(job))
