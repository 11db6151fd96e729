"""The fleet's free GPU capacity, indexed so that one placement decision visits a few buckets.

Only ONLINE nodes take new jobs; DRAINING and OFFLINE nodes are kept only so that their
GPUs can still be allocated and released. GPUs fall into classes (model name, total memory).
A request (``gpu_model``, ``gpu_memory_mb``, ``node_selector``) resolves to the classes
that satisfy it and the online nodes its selector admits, and gets a *view* of them: those
nodes bucketed by how many fitting GPUs each has free, names sorted within a bucket. Views
are built on first use and kept current by ``allocate`` and ``release``, so a decision costs
a few dictionary and bucket look-ups however big the fleet is.

Matching: ``gpu_model`` is a case-insensitive substring of the GPU's name ("a100" matches
"NVIDIA A100-SXM4-80GB"); ``gpu_memory_mb`` is met by a GPU whose total memory is at least
that; every GPU of a job must meet both, on one node. With ``gpus=0`` (CPU-only) there are
no GPUs to constrain, so the job fits any online node its selector admits.

Job slots: a node whose agent runs as many jobs as it has slots (``NodeSnapshot.slots``) is
*full* and leaves every view's buckets until one of its jobs ends; ``allocate`` and
``release`` each count one job. A job placed there would only wait in that agent's queue
while another node sits idle.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from overlay.errors import GpuTaken, NodeNotFound
from overlay.model import JobSpec, NodeSnapshot, NodeState, NoFit

Selector = tuple[tuple[str, str], ...]
# What a request asks of one GPU and of a node: (model, minimum memory, selector).
Shape = tuple[str, int, Selector]


@dataclass(frozen=True, kw_only=True)
class GpuClass:
    """GPUs placement cannot tell apart: same model name, same total memory (MiB)."""

    name: str
    memory_mb: int


@dataclass(frozen=True, kw_only=True)
class Candidates:
    """The nodes that can take a request now, for a policy to choose from.

    ``buckets`` pairs a count of free fitting GPUs with the names (sorted) of the nodes
    that have exactly that many; only non-empty buckets with at least ``needs``, in
    ascending count. The sequences belong to the fleet: read them, do not change them.
    """

    needs: int
    buckets: tuple[tuple[int, Sequence[str]], ...]


def shape_of(job: JobSpec) -> Shape:
    """The part of ``job`` that decides which GPUs and nodes can serve it."""
    selector = tuple(sorted(job.node_selector.items())) if job.node_selector else ()
    if job.gpus <= 0:
        return ("", 0, selector)
    return (job.gpu_model.lower(), job.gpu_memory_mb, selector)


class _Node:
    __slots__ = ("free", "gpu_class", "labels", "name", "running", "slots", "state")

    def __init__(self, snap: NodeSnapshot, gpu_class: dict[int, int]) -> None:
        self.name = snap.name
        self.labels = dict(snap.labels)
        self.state = snap.state
        self.gpu_class = gpu_class  # GPU index -> class id
        self.free = set(gpu_class) - snap.taken
        self.slots = snap.slots
        self.running = snap.running

    @property
    def full(self) -> bool:
        """Every job slot busy: takes no job now."""
        return self.slots is not None and self.running >= self.slots

    def fitting(self, classes: frozenset[int], indices: Iterable[int]) -> int:
        return sum(1 for i in indices if self.gpu_class[i] in classes)


class _View:
    """Some online nodes, bucketed by how many free GPUs of some classes each has.

    ``count`` covers every node of the view; the buckets leave out the ``full`` ones.
    """

    __slots__ = ("buckets", "classes", "count", "full", "most_total", "version")

    def __init__(self, classes: frozenset[int], nodes: Sequence[_Node]) -> None:
        self.classes = classes
        self.count = {n.name: n.fitting(classes, n.free) for n in nodes}
        self.full = {n.name for n in nodes if n.full}
        self.most_total = max((n.fitting(classes, n.gpu_class) for n in nodes), default=0)
        self.buckets: list[list[str]] = [[] for _ in range(self.most_total + 1)]
        for name in sorted(self.count.keys() - self.full):
            self.buckets[self.count[name]].append(name)
        self.version = 0  # bumped on every change, so a pass can tell a reason went stale

    def shift(self, name: str, delta: int) -> None:
        old = self.count[name]
        if name not in self.full:
            bucket = self.buckets[old]
            del bucket[bisect_left(bucket, name)]
            insort(self.buckets[old + delta], name)
        self.count[name] = old + delta
        self.version += 1

    def set_full(self, name: str, full: bool) -> None:
        """Take a node out of the buckets while its job slots are all busy, or put it back."""
        if full == (name in self.full):
            return
        bucket = self.buckets[self.count[name]]
        if full:
            del bucket[bisect_left(bucket, name)]
            self.full.add(name)
        else:
            insort(bucket, name)
            self.full.discard(name)
        self.version += 1

    def candidates(self, needs: int) -> Candidates:
        needs = max(needs, 0)
        found = tuple((k, b) for k, b in enumerate(self.buckets[needs:], needs) if b)
        return Candidates(needs=needs, buckets=found)

    def most_free(self) -> int:
        return next((k for k in range(len(self.buckets) - 1, -1, -1) if self.buckets[k]), 0)

    def most_free_on_full_nodes(self) -> int:
        """The most free fitting GPUs on one of the nodes with every job slot busy."""
        return max((self.count[name] for name in self.full), default=0)


class Fleet:
    """Free GPU capacity of a set of nodes: placement queries it, a scheduling pass updates it."""

    def __init__(self, nodes: Iterable[_Node], classes: Sequence[GpuClass]) -> None:
        """Use ``Fleet.from_snapshots``."""
        self._nodes = {n.name: n for n in nodes}
        self._classes = tuple(classes)
        self._online = tuple(sorted(n for n, v in self._nodes.items() if v.state is NodeState.ONLINE))
        self._labels: dict[tuple[str, str], set[str]] = {}
        for name in self._online:
            for label in self._nodes[name].labels.items():
                self._labels.setdefault(label, set()).add(name)
        self._selected: dict[Selector, tuple[str, ...]] = {(): self._online}
        self._views: dict[tuple[frozenset[int], Selector], _View] = {}
        self._resolved: dict[Shape, _View | NoFit] = {}
        self._usable: dict[Shape, dict[str, frozenset[int]]] = {}

    @classmethod
    def from_snapshots(cls, nodes: Iterable[NodeSnapshot]) -> Fleet:
        """Index ``nodes``; their ``taken`` GPUs start held. A repeated name: the last wins."""
        ids: dict[GpuClass, int] = {}
        built = []
        for snap in nodes:
            gpu_class = {}
            for gpu in snap.gpus:
                key = GpuClass(name=gpu.name, memory_mb=gpu.memory_total_mb)
                gpu_class[gpu.index] = ids.setdefault(key, len(ids))
            built.append(_Node(snap, gpu_class))
        return cls(built, list(ids))

    @property
    def online(self) -> tuple[str, ...]:
        """Names of the nodes that take new jobs, sorted."""
        return self._online

    def free(self, node: str) -> frozenset[int]:
        """Indices of the GPUs of ``node`` no job holds. Raises NodeNotFound."""
        return frozenset(self._node(node).free)

    def candidates(self, job: JobSpec) -> Candidates | NoFit:
        """The nodes that can take ``job`` now, or NoFit when no online node ever could."""
        found = self._resolve(job)
        return found if isinstance(found, NoFit) else found.candidates(job.gpus)

    def stamp(self, shape: Shape) -> int:
        """A number that changes whenever the capacity a request of ``shape`` could use changes."""
        found = self._resolve_shape(shape)
        return -1 if isinstance(found, NoFit) else found.version

    def can_take(self, node: str, job: JobSpec) -> bool:
        """Whether ``node`` is online, admitted by ``job``'s selector and has its GPUs free."""
        found = self._resolve(job)
        return (not isinstance(found, NoFit) and node not in found.full
                and found.count.get(node, -1) >= job.gpus)

    def usable(self, job: JobSpec) -> Mapping[str, frozenset[int]]:
        """The online nodes ``job``'s constraints admit, each with the indices of its GPUs
        that meet ``job``, free or held (empty for a CPU-only job); {} when none could. Read it,
        do not change it: it belongs to the fleet."""
        shape = shape_of(job)
        known = self._usable.get(shape)
        if known is None:  # which GPUs meet a shape never changes: only which are free does
            found = self._resolve_shape(shape)
            known = self._usable[shape] = {} if isinstance(found, NoFit) else {
                name: frozenset(i for i, c in self._nodes[name].gpu_class.items() if c in found.classes)
                for name in found.count}
        return known

    def fitting_gpus(self, node: str, job: JobSpec) -> tuple[int, ...]:
        """The lowest free indices on ``node`` that meet ``job``, at most ``job.gpus`` of them.

        Raises NodeNotFound.
        """
        n = self._node(node)
        found = self._resolve(job)
        if job.gpus <= 0 or isinstance(found, NoFit):
            return ()
        fits = sorted(i for i in n.free if n.gpu_class[i] in found.classes)
        return tuple(fits[: job.gpus])

    def allocate(self, node: str, gpus: Iterable[int], *, job: bool = True) -> None:
        """Start one job on ``node`` holding ``gpus``: they are held, and one job slot
        (none with ``job=False``: GPUs set aside, as a backfill reservation does).

        Raises NodeNotFound, ValueError for an index the node does not have, GpuTaken
        when one is already held (and then holds none).
        """
        n, wanted = self._node(node), self._known(node, gpus)
        if not wanted <= n.free:
            raise GpuTaken(node=node, gpus=tuple(sorted(wanted - n.free)))
        n.free -= wanted
        self._shift(n, wanted, -1)
        if job:
            self._count_job(n, +1)

    def release(self, node: str, gpus: Iterable[int], *, job: bool = True) -> None:
        """End one job on ``node``: free ``gpus`` (freeing a free GPU does nothing) and its
        slot (none with ``job=False``: undoes ``allocate(..., job=False)``).

        Raises NodeNotFound, ValueError for an index the node does not have.
        """
        n, wanted = self._node(node), self._known(node, gpus)
        freed = wanted - n.free
        n.free |= freed
        self._shift(n, freed, +1)
        if job:
            self._count_job(n, -1)

    def explain(self, job: JobSpec) -> NoFit:
        """Why ``job`` fits nowhere now, in words a person can act on (call it on a no-fit)."""
        found = self._resolve(job)
        if isinstance(found, NoFit):
            return found
        wants = _wants(job.gpus, shape_of(job))
        if found.most_total < job.gpus:
            return NoFit(reason=f"needs {wants}; the most any online node has: {found.most_total}",
                         details={"needs": job.gpus, "most_total": found.most_total})
        most = found.most_free()
        if found.full and found.most_free_on_full_nodes() >= job.gpus:
            busy = sorted(found.full)
            shown = ", ".join(busy[:3]) + (f" and {len(busy) - 3} more" if len(busy) > 3 else "")
            return NoFit(reason=f"needs {wants}; the nodes with room run all the jobs their agents "
                                f"take ({shown}: every job slot busy)",
                         details={"needs": job.gpus, "most_free": most, "full_nodes": len(busy)})
        return NoFit(reason=f"needs {wants}; most free on one node: {most}",
                     details={"needs": job.gpus, "most_free": most})

    def _node(self, name: str) -> _Node:
        try:
            return self._nodes[name]
        except KeyError:
            raise NodeNotFound(name) from None

    def _known(self, node: str, gpus: Iterable[int]) -> set[int]:
        wanted = set(gpus)
        unknown = wanted - self._nodes[node].gpu_class.keys()
        if unknown:
            raise ValueError(f"node {node!r} has no GPU {sorted(unknown)}")
        return wanted

    def _count_job(self, n: _Node, sign: int) -> None:
        if n.slots is None:
            return
        n.running = max(0, n.running + sign)
        if n.state is NodeState.ONLINE:
            for view in self._views.values():
                if n.name in view.count:
                    view.set_full(n.name, n.full)

    def _shift(self, n: _Node, gpus: set[int], sign: int) -> None:
        if n.state is not NodeState.ONLINE or not gpus:
            return
        for view in self._views.values():
            if n.name in view.count:
                delta = n.fitting(view.classes, gpus)
                if delta:
                    view.shift(n.name, sign * delta)

    def _resolve(self, job: JobSpec) -> _View | NoFit:
        return self._resolve_shape(shape_of(job))

    def _resolve_shape(self, shape: Shape) -> _View | NoFit:
        found = self._resolved.get(shape)
        if found is None:
            found = self._resolved[shape] = self._build(shape)
        return found

    def _build(self, shape: Shape) -> _View | NoFit:
        model, memory, selector = shape
        if not self._online:
            return _no_online(self._nodes.values())
        names = self._select(selector)
        if not names:
            return NoFit(reason=f"no online node matches node_selector {dict(selector)}",
                         details={"node_selector": dict(selector)})
        nodes = [self._nodes[name] for name in names]
        present = {c for n in nodes for c in n.gpu_class.values()}
        classes = frozenset(c for c in present if _meets(self._classes[c], model, memory))
        if (model or memory) and not classes:
            return _mismatch([self._classes[c] for c in present], shape)
        key = (classes, selector)
        if key not in self._views:
            self._views[key] = _View(classes, nodes)
        return self._views[key]

    def _select(self, selector: Selector) -> tuple[str, ...]:
        if selector not in self._selected:
            sets = sorted((self._labels.get(label, set()) for label in selector), key=len)
            self._selected[selector] = tuple(sorted(set.intersection(*sets)))
        return self._selected[selector]


def _meets(gpu: GpuClass, model: str, memory: int) -> bool:
    return model in gpu.name.lower() and gpu.memory_mb >= memory


def _wants(gpus: int, shape: Shape) -> str:
    model, memory, selector = shape
    text = f"{gpus} GPU{'' if gpus == 1 else 's'}"
    text += f" of model {model!r}" if model else ""
    text += f" with >={memory} MiB" if memory else ""
    return text + (f" on nodes matching {dict(selector)}" if selector else "")


def _no_online(nodes: Iterable[_Node]) -> NoFit:
    states: dict[str, int] = {}
    for n in nodes:
        states[n.state.value] = states.get(n.state.value, 0) + 1
    counts = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
    return NoFit(reason="no online nodes" + (f" ({counts})" if counts else ""), details={"nodes": states})


def _mismatch(present: Sequence[GpuClass], shape: Shape) -> NoFit:
    model, memory, selector = shape
    where = f" on nodes matching node_selector {dict(selector)}" if selector else ""
    same_model = [g for g in present if model in g.name.lower()]
    if not same_model:
        models = sorted({g.name for g in present})
        return NoFit(reason=f"no GPU matches model {model!r}{where}; online models: "
                            + (", ".join(models) or "none"),
                     details={"gpu_model": model, "models": models})
    largest = max(g.memory_mb for g in same_model)
    of_model = f" of model {model!r}" if model else ""
    return NoFit(reason=f"no GPU{of_model} has >={memory} MiB{where}; the largest has {largest} MiB",
                 details={"gpu_memory_mb": memory, "largest_mb": largest})

