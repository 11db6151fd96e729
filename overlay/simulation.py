"""A discrete-event simulation of the scheduler: the real queue order, Fleet, placement and
policy, over a workload of ``SimJob`` values, with the figures that compare policies.

Pure: time is the simulated clock; the caller times the run if it wants a rate.

At each moment something happens (jobs end, then jobs arrive) the simulator makes one
scheduling pass with the same outcome as ``overlay.queueing.plan_pass`` over the whole
queue: jobs in ``queue_key`` order, each placed by ``overlay.placement.place`` if it fits,
a job that does not fit holding back no one (backfill). It gets there without visiting
the whole queue. Waiting jobs are grouped by what decides their fit (GPU count and
shape); within a pass capacity only shrinks, so once a group's oldest job fails the rest
of the group fails too, and a shape whose ``Fleet.stamp`` has not moved since all its
groups failed is not asked again. A pass therefore visits each group's head once, plus
one ``place`` per job it places.
"""

from __future__ import annotations

import heapq
import math
from array import array
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from overlay.backlog import Backlog
from overlay.fairshare import (
    HALF_LIFE_S,
    Usage,
    UserKey,
    Weights,
    advance,
    multifactor_order,
    normalized_share,
)
from overlay.fleet import Fleet, Shape, shape_of
from overlay.gang import held_gpus, parts_of, place_any
from overlay.model import JobSpec, NodeSnapshot, NodeState, NoFit, Placement
from overlay.policies import Policy, first_fit
from overlay.queueing import Decision, QueuedJob, plan_pass, queue_key
from overlay.quota import Quota, QuotaGate
from overlay.reservation import Running
from overlay.simgate import Gate
from overlay.workload import EPOCH, SimJob

QueueKey = tuple[int, bool, datetime, str]


@dataclass(frozen=True, kw_only=True)
class SimEvent:
    """A job started (``kind="start"``) or ended (``"end"``) at ``at_s`` on these GPUs."""

    kind: str
    at_s: float
    job: SimJob
    node: str  # rank 0's, for a gang job (``parts`` has every part)
    gpus: tuple[int, ...]
    parts: tuple[Placement, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Sample:
    """The fleet at one moment, for a chart: GPUs held and jobs waiting."""

    at_s: float
    busy_gpus: int
    queued: int


@dataclass(frozen=True, kw_only=True)
class Sharing:
    """Accounts' shares and quotas, and how fair share weighs and forgets usage."""

    shares: Mapping[str, float] = field(default_factory=dict)
    quotas: Mapping[str, Quota] = field(default_factory=dict)
    weights: Weights = field(default_factory=Weights)
    half_life_s: float = HALF_LIFE_S


@dataclass(frozen=True, kw_only=True)
class AccountUse:
    """What one account got. ``share`` is its part of all shares (None: no shares given).

    *Contended* time is when every account of the workload had jobs waiting: then fair
    share decides who runs, and ``contended_use`` (its part of the GPU-seconds held then)
    is what to hold against ``share``. ``borrowed`` counts jobs placed beyond its quota.
    """

    account: str
    share: float | None
    quota: int | None
    jobs: int
    placed: int
    borrowed: int
    gpu_hours: float
    contended_gpu_hours: float
    contended_use: float


@dataclass(frozen=True, kw_only=True)
class SimResult:
    """What one policy did to one workload.

    The *window* runs from the first submit to the last: the fleet under load, before the
    queue drains. ``utilization`` is the mean share of GPUs held in it, ``mean_queue`` the
    mean number of jobs waiting, ``fragmentation`` the mean share of GPUs that were free
    while jobs waited (after each pass no waiting job can use any free GPU, so these are
    stranded by size, model or selector). ``never_placed`` counts jobs no node could take
    even with every GPU free; they are not queued, so they count in neither. Waits are from
    submit to placement, for placed jobs; ``starved`` counts placed jobs that waited longer
    than the bound. ``decisions`` counts calls to ``place``.
    """

    jobs: int
    placed: int
    never_placed: int
    decisions: int
    total_gpus: int
    window_s: float
    makespan_s: float
    utilization: float
    mean_queue: float
    max_queue: int
    fragmentation: float
    wait_p50_s: float
    wait_p95_s: float
    wait_p99_s: float
    wait_max_s: float
    starve_after_s: float
    starved: int
    samples: tuple[Sample, ...]
    accounts: tuple[AccountUse, ...] = ()
    contended_s: float = 0.0
    # Ended CANCELLED, a dependency never satisfied; still held on one that never ran.
    dependency_cancelled: int = 0
    dependency_held: int = 0


class _Group:
    """Waiting jobs of one GPU count, node count and shape, oldest (by queue order) first."""

    __slots__ = ("blocked_at", "feasible", "gpus", "heap", "nodes", "shape")

    def __init__(self, gpus: int, shape: Shape, *, feasible: bool, nodes: int = 1) -> None:
        self.gpus, self.shape, self.feasible, self.nodes = gpus, shape, feasible, nodes
        self.heap: list[tuple[QueueKey, SimJob]] = []
        self.blocked_at: int | None = None  # the stamp at which its head last failed


class _Shape:
    """The groups of one shape, and the stamp at which none of them could be placed."""

    __slots__ = ("blocked_at", "groups", "shape", "waiting")

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.groups: dict[tuple[int, int], _Group] = {}  # by (GPUs, nodes)
        self.blocked_at: int | None = None
        self.waiting = 0


class _Run:
    """The state of one simulation; ``run`` is the event loop."""

    def __init__(self, nodes: Sequence[NodeSnapshot], policy: Policy,
                 observer: Callable[[SimEvent], None] | None) -> None:
        self.fleet = Fleet.from_snapshots(nodes)
        self.idle_fleet = Fleet.from_snapshots(nodes)  # never allocated: what could ever fit
        self.total = sum(len(n.gpus) for n in nodes if n.state is NodeState.ONLINE)
        self.policy, self.observer = policy, observer
        self.running: list[tuple[float, int, tuple[Placement, ...], SimJob]] = []
        self.shapes: dict[Shape, _Shape] = {}
        self.seq = self.busy = self.waiting = self.decisions = self.jobs = self.max_queue = 0
        self.unplaceable = 0
        self.waits = array("d")
        self.area_busy = self.area_queue = self.area_stranded = self.window = self.makespan = 0.0

    def run(self, jobs: Iterable[SimJob], *, sample_every_s: float) -> list[Sample]:
        """Replay ``jobs`` (in submit order) until nothing runs and nothing more can start."""
        arrivals = iter(jobs)
        self.holds = gate = Gate()  # dependencies and arrays' %N limits, as the real pass holds them
        upcoming = next(arrivals, None)
        origin = prev = upcoming.submit_s if upcoming else 0.0
        samples: list[Sample] = []
        next_sample = origin
        while upcoming is not None or self.running:
            now = min(upcoming.submit_s if upcoming else math.inf,
                      self.running[0][0] if self.running else math.inf)
            while sample_every_s > 0 and upcoming is not None and next_sample < now:
                samples.append(Sample(at_s=next_sample - origin, busy_gpus=self.busy, queued=self.waiting))
                next_sample += sample_every_s
            self.integrate(now - prev, in_window=upcoming is not None)
            prev = now
            while self.running and self.running[0][0] <= now:
                ended: SimJob = self.running[0][-1]
                self.end(now)
                for job in gate.ended(ended):
                    self.enqueue(job)
            while upcoming is not None and upcoming.submit_s <= now:
                for job in gate.arrive(upcoming):
                    self.enqueue(job)
                following = next(arrivals, None)
                if following is not None and following.submit_s < upcoming.submit_s:
                    raise ValueError(f"jobs must come in submit order: {following.spec.job_id!r} "
                                     f"is submitted before {upcoming.spec.job_id!r}")
                upcoming = following
            self.schedule(now)
        self.makespan = prev - origin
        return samples

    def integrate(self, dt: float, *, in_window: bool) -> None:
        if dt <= 0 or not in_window:
            return
        self.window += dt
        self.area_busy += self.busy * dt
        self.area_queue += self.waiting * dt
        if self.waiting:
            self.area_stranded += (self.total - self.busy) * dt

    def enqueue(self, job: SimJob) -> None:
        shape = shape_of(job.spec)
        entry = self.shapes.get(shape)
        if entry is None:
            entry = self.shapes[shape] = _Shape(shape)
        size = (job.spec.gpus, job.spec.nodes)
        group = entry.groups.get(size)
        if group is None:
            group = entry.groups[size] = _Group(job.spec.gpus, shape, feasible=self.could_ever(job.spec),
                                                nodes=job.spec.nodes)
        self.jobs += 1
        if not group.feasible:
            # No node could take it even idle, and the fleet never changes: it would wait
            # for ever in the real queue, placing nothing and holding back no one.
            self.unplaceable += 1
            return
        if not group.heap:
            group.blocked_at = entry.blocked_at = None  # no verdict covers this group yet
        heapq.heappush(group.heap, (queue_key(job), job))
        entry.waiting += 1
        self.waiting += 1
        self.max_queue = max(self.max_queue, self.waiting)

    def could_ever(self, spec: JobSpec) -> bool:
        """Whether some nodes could take ``spec`` with every GPU free."""
        if spec.nodes > 1:
            return not isinstance(place_any(spec, self.idle_fleet, policy=first_fit), NoFit)
        found = self.idle_fleet.candidates(spec)
        return not isinstance(found, NoFit) and bool(found.buckets)

    def end(self, now: float) -> None:
        _, _, parts, job = heapq.heappop(self.running)
        for part in parts:
            self.fleet.release(part.node, part.gpus)
            self.busy -= len(part.gpus)
        if self.observer:
            self.observer(SimEvent(kind="end", at_s=now, job=job, node=parts[0].node, gpus=parts[0].gpus,
                                   parts=parts))

    def schedule(self, now: float) -> None:
        """One pass: the heads of groups that may fit, tried in queue order, as plan_pass would."""
        heads: list[tuple[QueueKey, int, _Group]] = []
        tried = []
        for entry in self.shapes.values():
            stamp = self.fleet.stamp(entry.shape) if entry.waiting else None
            if stamp is None or stamp == entry.blocked_at:
                continue
            tried.append(entry)
            most: float | None = None
            for g in entry.groups.values():
                if not g.heap or g.blocked_at == stamp:
                    continue
                if g.blocked_at is not None:  # refused before: worth a try only if it fits now
                    most = self.most_free(entry) if most is None else most
                    if g.gpus > most:
                        continue
                heads.append((g.heap[0][0], id(g), g))
        heapq.heapify(heads)
        while heads:
            _, _, group = heapq.heappop(heads)
            job = group.heap[0][1]
            outcome = place_any(job.spec, self.fleet, policy=self.policy)
            self.decisions += 1
            if not isinstance(outcome, Placement):
                continue  # this group is done for the pass: capacity only shrinks from here
            heapq.heappop(group.heap)
            for part in parts_of(outcome):
                self.fleet.allocate(part.node, part.gpus)
            self.shapes[group.shape].waiting -= 1
            self.start(job, outcome, now)
            if group.heap:
                heapq.heappush(heads, (group.heap[0][0], id(group), group))
        # Whatever still waits in these shapes failed against at least this much capacity.
        for entry in tried:
            entry.blocked_at = self.fleet.stamp(entry.shape)
            for g in entry.groups.values():
                g.blocked_at = entry.blocked_at if g.heap else None

    def most_free(self, entry: _Shape) -> float:
        """The most free GPUs of ``entry``'s shape on one node (-1 when no node qualifies)."""
        smallest = None
        for group in entry.groups.values():
            if group.heap and (smallest is None or group.gpus < smallest.gpus):
                smallest = group
        assert smallest is not None, "a shape with waiting jobs has a non-empty group"
        found = self.fleet.candidates(smallest.heap[0][1].spec)
        if isinstance(found, NoFit) or not found.buckets:
            return -1
        return found.buckets[-1][0]

    def start(self, job: SimJob, placement: Placement, now: float) -> None:
        """``job`` starts on ``placement`` (already allocated in the Fleet) at ``now``."""
        parts = parts_of(placement)
        heapq.heappush(self.running, (now + job.duration_s, self.seq, parts, job))
        self.seq += 1
        self.busy += held_gpus(placement)
        self.waiting -= 1
        self.waits.append(now - job.submit_s)
        if self.observer:
            self.observer(SimEvent(kind="start", at_s=now, job=job, node=placement.node,
                                   gpus=placement.gpus, parts=parts))


class _SharedRun(_Run):
    """``_Run``'s loop with accounts: each pass is ``plan_pass`` itself, in multifactor order
    (fair share reorders the queue at every moment) and through a QuotaGate.

    It is given only the jobs that could be placed: the first free-GPUs / GPUs of each
    backlog (``Backlog``), since in a pass capacity and quota room only shrink and a
    backlog's jobs are refused in its order. With per-model quotas it is given every job
    (a later job could land on another model), and a pass costs the whole queue.
    """

    def __init__(self, nodes: Sequence[NodeSnapshot], policy: Policy,
                 observer: Callable[[SimEvent], None] | None, sharing: Sharing) -> None:
        super().__init__(nodes, policy, observer)
        self.sharing = sharing
        self.gate = QuotaGate(sharing.quotas, nodes)
        self.whole_queue = any(q.models for q in sharing.quotas.values())
        self.backlogs: dict[tuple[str, str, int, int, Shape], Backlog] = {}
        self.feasible: dict[tuple[int, int, Shape], bool] = {}
        self.usage = Usage(at=EPOCH)
        self.holding: Counter[UserKey] = Counter()
        self.queued: Counter[str] = Counter()  # jobs waiting, per account
        self.submitted: Counter[str] = Counter()
        self.placed: Counter[str] = Counter()
        self.borrowed: Counter[str] = Counter()
        self.gpu_seconds: defaultdict[str, float] = defaultdict(float)
        self.contended: defaultdict[str, float] = defaultdict(float)
        self.contended_s = 0.0

    def integrate(self, dt: float, *, in_window: bool) -> None:
        super().integrate(dt, in_window=in_window)
        if dt > 0 and all(self.queued[account] for account in self.submitted):
            self.contended_s += dt
            for (account, _), gpus in self.holding.items():
                self.contended[account] += gpus * dt

    def enqueue(self, job: SimJob) -> None:
        spec = job.spec
        shape = shape_of(spec)
        if (spec.gpus, spec.nodes, shape) not in self.feasible:
            self.feasible[spec.gpus, spec.nodes, shape] = self.could_ever(spec)
        self.jobs += 1
        self.submitted[spec.account] += 1
        if not self.feasible[spec.gpus, spec.nodes, shape]:
            self.unplaceable += 1
            return
        key = (spec.account, spec.user, spec.gpus, spec.nodes, shape)
        backlog = self.backlogs.get(key)
        if backlog is None:  # a gang needs all its parts' GPUs free at once
            backlog = self.backlogs[key] = Backlog(spec.gpus * spec.nodes, self.sharing.weights)
        backlog.push(job)
        self.queued[spec.account] += 1
        self.waiting += 1
        self.max_queue = max(self.max_queue, self.waiting)

    def schedule(self, now: float) -> None:
        at = self.carry(now)
        free = self.total - self.busy
        taken = {key: b.take(b.size if self.whole_queue or not b.gpus else free // b.gpus, at)
                 for key, b in self.backlogs.items()}
        order = multifactor_order(now=at, usage=self.usage, shares=self.sharing.shares,
                                  weights=self.sharing.weights)
        candidates = {job.spec.job_id: job for jobs in taken.values() for job in jobs}
        decisions = plan_pass(candidates.values(), self.fleet, policy=self.policy, order=order,
                              admit=self.gate)
        self.decisions += len(decisions)
        placed = {d.job_id: d.outcome for d in decisions if isinstance(d.outcome, Placement)}
        for key, jobs in taken.items():
            self.backlogs[key].put_back(jobs, placed)
        for decision in decisions:
            if isinstance(decision.outcome, Placement):
                self.begin(candidates[decision.job_id], decision.outcome, now, borrowed=decision.borrowed)

    def begin(self, job: SimJob, placement: Placement, now: float, *, borrowed: bool) -> None:
        spec = job.spec
        self.queued[spec.account] -= 1
        self.placed[spec.account] += 1
        self.borrowed[spec.account] += borrowed
        self.holding[spec.account, spec.user] += held_gpus(placement)
        self.gpu_seconds[spec.account] += held_gpus(placement) * job.duration_s
        self.start(job, placement, now)

    def end(self, now: float) -> None:
        self.carry(now)  # the ending job held its GPUs up to now
        _, _, parts, job = self.running[0]
        super().end(now)
        held = Placement(node=parts[0].node, gpus=tuple(i for p in parts for i in p.gpus))  # as admitted
        self.holding[job.spec.account, job.spec.user] -= len(held.gpus)
        self.gate.release(job.spec.account, held)

    def carry(self, now: float) -> datetime:
        """Usage carried to ``now`` with what has been held since it was last carried."""
        at = EPOCH + timedelta(seconds=now)
        running = {key: gpus for key, gpus in self.holding.items() if gpus}
        self.usage = advance(self.usage, now=at, running=running, half_life_s=self.sharing.half_life_s)
        return at

    def uses(self) -> tuple[AccountUse, ...]:
        """Each account's figures, accounts of the shares first, then the workload's."""
        shares, quotas = self.sharing.shares, self.sharing.quotas
        contended = sum(self.contended.values())
        names = dict.fromkeys([*shares, *quotas, *sorted(self.submitted)])
        return tuple(AccountUse(
            account=a, share=normalized_share(shares, a) if shares else None,
            quota=quotas[a].gpus if a in quotas else None, jobs=self.submitted[a], placed=self.placed[a],
            borrowed=self.borrowed[a], gpu_hours=self.gpu_seconds[a] / 3600,
            contended_gpu_hours=self.contended[a] / 3600,
            contended_use=self.contended[a] / contended if contended else 0.0) for a in names)


class _ReservingRun(_Run):
    """``_Run``'s loop where each pass is ``plan_pass`` itself, given the running jobs' latest
    ends, so the first blocked job gets a reservation and later jobs backfill only around it
    (``overlay.reservation``). A job without ``timeout_s`` gets its run time (rounded up to
    a second) as its timeout: the estimate is exact, the best case for backfill.

    ``plan_pass`` is given only the jobs that could be placed or reserved: in each group (GPU
    count and shape) at most ``free GPUs // count`` start, so its first that many plus one
    in queue order; and when the reserved GPUs free now could go to jobs that end before
    the reservation starts, also the first that many of those in each group that could use
    the reserved node (found by a second pass once the first has found the reservation).
    """

    def __init__(self, nodes: Sequence[NodeSnapshot], policy: Policy,
                 observer: Callable[[SimEvent], None] | None) -> None:
        super().__init__(nodes, policy, observer)
        self.wrapped: dict[str, QueuedJob] = {}  # what plan_pass sees of each waiting job
        self.holders: dict[int, list[Running]] = {}  # by the running entry's sequence number
        self.reaches: dict[Shape, frozenset[str]] = {}  # the nodes each shape could use

    def enqueue(self, job: SimJob) -> None:
        super().enqueue(job)
        spec = job.spec if job.spec.timeout_s is not None else replace(job.spec, timeout_s=_timeout(job))
        self.wrapped[spec.job_id] = QueuedJob(spec=spec, enqueued_at=job.enqueued_at)

    def schedule(self, now: float) -> None:
        if not self.waiting:
            return
        at, free = _at(now), self.total - self.busy
        groups = [g for entry in self.shapes.values() for g in entry.groups.values() if g.heap]
        chosen = {e[1].spec.job_id: e[1] for g in groups for e in _smallest(g.heap, _room(g, free) + 1)}
        decisions = self.plan(chosen, at)
        r = next((d.reservation for d in decisions if d.reservation is not None), None)
        # Unless some reserved GPU was free at the start, the mask changes nothing: done.
        if r is not None and set(r.gpus) & (self.fleet.free(r.node) | self.placed_on(decisions, r.node)):
            self.undo(decisions)
            limit = (r.starts_at - at) // timedelta(seconds=1)  # the longest timeout that ends by then
            for g in groups:
                if r.node in self.reach(g.shape):
                    short = [e for e in g.heap if _timeout(e[1]) <= limit]
                    first = heapq.nsmallest(_room(g, free) + 1, short)
                    chosen.update((e[1].spec.job_id, e[1]) for e in first)
            decisions = self.plan(chosen, at)
        self.apply(decisions, chosen, now)

    def plan(self, chosen: Mapping[str, SimJob], at: datetime) -> list[Decision]:
        self.decisions += len(chosen)
        return plan_pass([self.wrapped[job_id] for job_id in chosen], self.fleet, policy=self.policy,
                         running=[r for held in self.holders.values() for r in held], now=at)

    def placed_on(self, decisions: Sequence[Decision], node: str) -> set[int]:
        return {i for d in decisions if isinstance(d.outcome, Placement)
                for p in parts_of(d.outcome) if p.node == node for i in p.gpus}

    def undo(self, decisions: Sequence[Decision]) -> None:
        for d in decisions:
            if isinstance(d.outcome, Placement):
                for p in parts_of(d.outcome):
                    self.fleet.release(p.node, p.gpus)

    def apply(self, decisions: Sequence[Decision], chosen: Mapping[str, SimJob], now: float) -> None:
        started = {d.job_id: d.outcome for d in decisions if isinstance(d.outcome, Placement)}
        if not started:
            return
        for entry in self.shapes.values():
            for g in entry.groups.values():
                left = [e for e in g.heap if e[1].spec.job_id not in started]
                if len(left) < len(g.heap):
                    entry.waiting -= len(g.heap) - len(left)
                    g.heap = left
                    heapq.heapify(left)
        for d in decisions:  # in queue order, as the scheduler would
            if isinstance(d.outcome, Placement):  # plan_pass has allocated it in the fleet
                del self.wrapped[d.job_id]
                self.start(chosen[d.job_id], d.outcome, now)

    def start(self, job: SimJob, placement: Placement, now: float) -> None:
        self.holders[self.seq] = [Running(node=p.node, gpus=p.gpus, ends_at=_at(now + _timeout(job)))
                                  for p in parts_of(placement)]
        super().start(job, placement, now)

    def end(self, now: float) -> None:
        del self.holders[self.running[0][1]]
        super().end(now)

    def reach(self, shape: Shape) -> frozenset[str]:
        found = self.reaches.get(shape)
        if found is None:
            model, memory, selector = shape
            probe = JobSpec(job_id="probe", cmd=("true",), gpus=1, gpu_model=model, gpu_memory_mb=memory,
                            node_selector=dict(selector))
            found = self.reaches[shape] = frozenset(self.idle_fleet.usable(probe))
        return found


def _timeout(job: SimJob) -> int:
    """``job``'s timeout_s, or its run time rounded up to a second when it has none."""
    return job.spec.timeout_s if job.spec.timeout_s is not None else max(1, math.ceil(job.duration_s))


def _room(group: _Group, free: int) -> int:
    """At most how many of ``group`` can start with ``free`` GPUs free (all, for CPU-only jobs)."""
    return free // (group.gpus * group.nodes) if group.gpus > 0 else len(group.heap)


def _smallest(heap: list[tuple[QueueKey, SimJob]], n: int) -> list[tuple[QueueKey, SimJob]]:
    """The ``n`` first entries of ``heap`` in order, walking the heap: O(n log n), not O(len)."""
    out: list[tuple[QueueKey, SimJob]] = []
    if not heap or n <= 0:
        return out
    if n >= len(heap):
        return sorted(heap)
    frontier = [(heap[0], 0)]
    while frontier and len(out) < n:
        entry, i = heapq.heappop(frontier)
        out.append(entry)
        for child in (2 * i + 1, 2 * i + 2):
            if child < len(heap):
                heapq.heappush(frontier, (heap[child], child))
    return out


def _at(seconds: float) -> datetime:
    return EPOCH + timedelta(seconds=seconds)


def simulate(
    nodes: Sequence[NodeSnapshot],
    jobs: Iterable[SimJob],
    *,
    policy: Policy,
    starve_after_s: float = 3600.0,
    sample_every_s: float = 0.0,
    observer: Callable[[SimEvent], None] | None = None,
    sharing: Sharing | None = None,
    backfill: bool = False,
) -> SimResult:
    """Replay ``jobs`` (in submit order) on ``nodes`` under ``policy``; sample the fleet every
    ``sample_every_s`` simulated seconds of the window (0: never); tell ``observer`` of every
    start and end. With ``sharing``, jobs are ordered by multifactor priority (fair share
    among their accounts) and held to their accounts' quotas, and the result has each
    account's use. With ``backfill``, each pass reserves GPUs for the first job that does not
    fit (``_ReservingRun``); not with ``sharing``.

    Raises ValueError when the jobs are out of submit order, and what ``place`` raises.
    """
    if backfill and sharing is not None:
        raise ValueError("backfill reservations are not simulated with fair share yet")
    sim = (_ReservingRun(nodes, policy, observer) if backfill else
           _Run(nodes, policy, observer) if sharing is None else _SharedRun(nodes, policy, observer, sharing))
    samples = sim.run(jobs, sample_every_s=sample_every_s)
    waits = sorted(sim.waits)
    capacity = sim.total * sim.window
    return SimResult(
        jobs=sim.jobs, placed=len(waits), never_placed=sim.unplaceable + sim.waiting,
        decisions=sim.decisions,
        total_gpus=sim.total, window_s=sim.window, makespan_s=sim.makespan,
        utilization=sim.area_busy / capacity if capacity else 0.0,
        mean_queue=sim.area_queue / sim.window if sim.window else 0.0, max_queue=sim.max_queue,
        fragmentation=sim.area_stranded / capacity if capacity else 0.0,
        wait_p50_s=percentile(waits, 50), wait_p95_s=percentile(waits, 95),
        wait_p99_s=percentile(waits, 99), wait_max_s=waits[-1] if waits else 0.0,
        starve_after_s=starve_after_s, starved=len(waits) - bisect_right(waits, starve_after_s),
        samples=tuple(samples),
        accounts=sim.uses() if isinstance(sim, _SharedRun) else (),
        contended_s=sim.contended_s if isinstance(sim, _SharedRun) else 0.0,
        dependency_cancelled=sim.holds.cancelled, dependency_held=sim.holds.held,
    )


def percentile(ordered: Sequence[float], pct: float) -> float:
    """The nearest-rank ``pct`` percentile of ascending ``ordered`` (0.0 when empty)."""
    if not ordered:
        return 0.0
    rank = max(math.ceil(pct / 100 * len(ordered)), 1)
    return ordered[rank - 1]

