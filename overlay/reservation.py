"""Backfill with a reservation: when the first waiting job that does not fit will start, and
which later jobs may go ahead of it without delaying it.

Pure: running jobs come in as ``Running`` values with their latest end (start + ``timeout_s``;
None for a job without a timeout, which counts as never ending), and ``now`` is an argument.

The reservation is for one job per pass, the first in queue order that does not fit now
but that some online node could hold. It is the earliest moment at which, counting only
the ends of running jobs, one node it could use has enough fitting GPUs free, and the GPUs
it would get there (those freed by that moment first, then ones free now). A later job may
start ahead of it when it ends by then (``timeout_s`` set and ``now + timeout_s`` no later
than the start) or when it keeps off the reserved GPUs; ``Backfill`` enforces the second
by holding the reserved GPUs that are free now while such a job is placed. Job slots are
not reserved, only GPUs. Nothing is stored: each pass computes the reservation afresh, and
it can only move earlier, since what started ahead of it ends by then or keeps off its GPUs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from overlay.fleet import Fleet
from overlay.model import JobSpec, NoFit, Placement


@dataclass(frozen=True, kw_only=True)
class Running:
    """A job holding GPUs on a node, and when it will have ended at the latest (None: unbounded)."""

    node: str
    gpus: tuple[int, ...]
    ends_at: datetime | None


@dataclass(frozen=True, kw_only=True)
class Reservation:
    """``job_id`` starts on ``node`` with ``gpus`` at ``starts_at`` at the latest, barring
    higher-priority work that arrives meanwhile."""

    job_id: str
    node: str
    gpus: tuple[int, ...]
    starts_at: datetime

    def ends_before(self, job: JobSpec, *, now: datetime) -> bool:
        """Whether ``job`` started now would have ended when the reservation starts."""
        return job.timeout_s is not None and now + timedelta(seconds=job.timeout_s) <= self.starts_at

    def describe(self) -> str:
        """``reserved node-a from 2026-11-30T21:40:00Z``: what the reserved job's reason adds."""
        return f"reserved {self.node} from {_iso(self.starts_at)}"


def ends_at(started: datetime, timeout_s: int | None) -> datetime | None:
    """The latest end of a job started at ``started`` (None: no timeout, never ends)."""
    return None if timeout_s is None else started + timedelta(seconds=timeout_s)


def reserve(job: JobSpec, fleet: Fleet, running: Iterable[Running], *, now: datetime,
            usable: Mapping[str, frozenset[int]] | None = None) -> Reservation | None:
    """The earliest reservation for ``job`` (ties: first node by name), or None when no node
    it could use will ever have room, counting only jobs with an end. ``usable`` is
    ``fleet.usable(job)`` when the caller has it already."""
    usable = fleet.usable(job) if usable is None else usable
    nodes = {name: fitting for name, fitting in usable.items() if len(fitting) >= job.gpus}
    free = {name: fleet.free(name) & fitting for name, fitting in nodes.items()}
    ready = sorted(name for name in nodes if len(free[name]) >= job.gpus)
    if ready:  # GPUs free but every job slot busy: the GPUs are not what it waits for
        return _reservation(job, ready[0], [], free[ready[0]], at=now)
    # Walk the ends in time order until a node has enough; ties at that moment: first name.
    freed: dict[str, list[int]] = {}
    found: datetime | None = None
    ready = []
    for end, name, gpus in sorted((max(r.ends_at, now), r.node, r.gpus) for r in running
                                  if r.ends_at is not None and r.node in nodes):
        if found is not None and end > found:
            break
        got = freed.setdefault(name, [])
        got.extend(sorted(set(gpus) & nodes[name] - free[name] - set(got)))
        if len(free[name]) + len(got) >= job.gpus:
            found = end
            ready.append(name)
    if found is None:
        return None
    name = min(ready)
    return _reservation(job, name, freed[name], free[name], at=found)


def _reservation(job: JobSpec, node: str, freed: list[int], free: frozenset[int], *,
                 at: datetime) -> Reservation:
    # GPUs busy now first: the fewer free GPUs reserved, the more room backfill has.
    gpus = (freed + sorted(free))[: job.gpus]
    return Reservation(job_id=job.job_id, node=node, gpus=tuple(sorted(gpus)), starts_at=at)


class Backfill:
    """One pass's reservation: made at the first blocked job, then kept by holding its free
    GPUs in the fleet while a job that would outlast it is placed.

    Call ``before`` ahead of placing each job in queue order, ``placed`` after each placement,
    ``blocked`` on each NoFit, and ``close`` at the end, which gives the held GPUs back.
    """

    def __init__(self, fleet: Fleet, running: Iterable[Running], *, now: datetime) -> None:
        self.fleet, self.now = fleet, now
        self.running = list(running)
        self.reservation: Reservation | None = None
        self.decided = False  # a blocked job has had its chance at the pass's one reservation
        self.held: frozenset[int] = frozenset()
        self.none_free = False

    def before(self, job: JobSpec) -> None:
        """Hold the reserved GPUs free now if ``job`` would outlast the reservation, else not."""
        r = self.reservation
        if r is None or r.ends_before(job, now=self.now):
            self._release()
        elif not self.held and not self.none_free:
            self.held = frozenset(r.gpus) & self.fleet.free(r.node)
            if self.held:
                self.fleet.allocate(r.node, self.held, job=False)
            else:  # free GPUs only get fewer in a pass: none of the reserved will be free again
                self.none_free = True

    def placed(self, job: JobSpec, placement: Placement) -> None:
        """Count a job placed ahead of the reservation among the running ones."""
        if not self.decided:
            self.running.append(Running(node=placement.node, gpus=placement.gpus,
                                        ends_at=ends_at(self.now, job.timeout_s)))

    def blocked(self, job: JobSpec, outcome: NoFit) -> tuple[NoFit, Reservation | None]:
        """The reason ``job`` waits; the first blocked job some node could hold gets the reservation."""
        if self.decided or job.gpus <= 0:
            return outcome, None
        usable = self.fleet.usable(job)
        if not any(len(fitting) >= job.gpus for fitting in usable.values()):
            return outcome, None  # no node could ever hold it: the next blocked job may
        self.decided = True
        self.reservation = reserve(job, self.fleet, self.running, now=self.now, usable=usable)
        if self.reservation is None:
            return outcome, None
        r = self.reservation
        return replace(outcome, reason=f"{outcome.reason}; {r.describe()}",
                       details={**outcome.details, "reserved_node": r.node, "reserved_gpus": list(r.gpus),
                                "reserved_from": _iso(r.starts_at)}), r

    def close(self) -> None:
        """Give back the GPUs held for the reservation: the fleet holds only what was placed."""
        self._release()

    def _release(self) -> None:
        if self.held and self.reservation is not None:
            self.fleet.release(self.reservation.node, self.held, job=False)
        self.held = frozenset()


def _iso(at: datetime) -> str:
    if at.tzinfo is not None:
        at = at.astimezone(UTC)
    return at.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
