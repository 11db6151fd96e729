"""GET /metrics: the control plane in Prometheus text format, read from Postgres at scrape time.

Nothing is counted in process memory: gunicorn runs several workers, and a counter
kept in one of them would be a fraction of the truth that resets on restart. Each
scrape builds a registry of its own around a collector that reads the job counters
(kept by triggers in Postgres, overlay/store/counters.py): no scrape reads the jobs or
events themselves, so its cost does not grow with history.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from flask import Response
from flask.views import MethodView
from flask_smorest import Blueprint
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from sqlalchemy.orm import Session

from overlay import __version__
from overlay.model import NodeInfo, NodeState
from overlay.states import JobState
from overlay.store import nodes as node_store
from overlay.store import stats
from overlay.store.session import resolve_now
from web import efficiency, usage
from web.deps import ApiDeps, deps

blp = Blueprint("metrics", __name__, description="Prometheus metrics")

# Seconds: a placement in milliseconds when GPUs are free, hours when the fleet is full.
# Migration 0004's overlay_le() buckets with the same bounds.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
                    4 * 3600, 24 * 3600)


class ControlPlaneCollector:
    """Jobs, queue, nodes and GPUs as Prometheus families, from one read-only transaction."""

    def __init__(self, svc: ApiDeps) -> None:
        self.svc = svc

    def collect(self) -> Iterator[Metric]:
        with self.svc.transaction() as s:
            now = resolve_now(s, self.svc.clock())
            yield from self.job_families(s, now)
            yield usage.gpu_seconds_family(s)
            yield efficiency.idle_family(s, now)
            infos = node_store.node_infos(s, now=now, ttl_s=self.svc.settings.node_ttl_s,
                                          include_offline=True)
        yield from node_families(infos)
        info = GaugeMetricFamily("overlay_build_info", "overlay's version.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info

    def job_families(self, s: Session, now: datetime) -> Iterator[Metric]:
        counts = stats.counters(s)
        by_state = counts.jobs_by_state()
        jobs = GaugeMetricFamily("overlay_jobs", "Jobs in each state now.", labels=["state"])
        for state, n in by_state.items():
            jobs.add_metric([state.value], n)
        yield jobs
        yield GaugeMetricFamily("overlay_queue_depth", "Jobs QUEUED, waiting for GPUs to be placed on.",
                                value=by_state[JobState.QUEUED])
        oldest = stats.oldest_queued_at(s)
        yield GaugeMetricFamily("overlay_queue_oldest_wait_seconds",
                                "How long the oldest QUEUED job has waited (0 when none waits).",
                                value=(now - oldest).total_seconds() if oldest else 0.0)
        yield CounterMetricFamily("overlay_jobs_submitted", "Jobs ever submitted.", value=counts.submitted())
        yield CounterMetricFamily("overlay_preemptions", "Running attempts preempted for a waiting job.",
                                  value=counts.preemptions())
        entered = counts.entered()
        yield CounterMetricFamily("overlay_placements", "Placements ever made (a retry places again).",
                                  value=entered[JobState.PLACED])
        transitions = CounterMetricFamily(
            "overlay_job_transitions", "Job state transitions ever recorded, by the state entered.",
            labels=["state"])
        for state, n in entered.items():
            transitions.add_metric([state.value], n)
        yield transitions
        yield histogram(
            "overlay_placement_latency_seconds",
            "Time from submit to each placement (a retry is placed, and observed, again).",
            counts.histogram("placement_latency", DURATION_BUCKETS))
        yield histogram(
            "overlay_queue_wait_seconds",
            "Time from submit until each start of the job running.",
            counts.histogram("queue_wait", DURATION_BUCKETS))


def node_families(infos: list[NodeInfo]) -> Iterator[Metric]:
    nodes = GaugeMetricFamily("overlay_nodes", "Nodes in each state.", labels=["state"])
    for state in NodeState:
        nodes.add_metric([state.value], sum(1 for i in infos if i.snapshot.state is state))
    yield nodes
    allocated = GaugeMetricFamily("overlay_gpus_allocated", "GPUs held by a job.", labels=["node"])
    free = GaugeMetricFamily(
        "overlay_gpus_free", "GPUs that could take a job now (online, not draining, not held).",
        labels=["node"])
    total = GaugeMetricFamily("overlay_gpus", "GPUs the node's agent reported.", labels=["node"])
    for info in infos:
        snap = info.snapshot
        held = len(info.holders)
        allocated.add_metric([snap.name], held)
        usable = snap.state is NodeState.ONLINE
        free.add_metric([snap.name], sum(1 for g in snap.gpus if g.index not in snap.taken) if usable else 0)
        total.add_metric([snap.name], len(snap.gpus))
    yield from (allocated, free, total)


def histogram(name: str, doc: str, h: stats.Histogram) -> Metric:
    buckets = [(_le(b), c) for b, c in zip(h.bounds, h.cumulative, strict=True)]
    return HistogramMetricFamily(name, doc, buckets=[*buckets, ("+Inf", h.count)], sum_value=h.sum)


def _le(bound: float) -> str:
    return str(float(bound))


def render(svc: ApiDeps) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ControlPlaneCollector(svc))  # type: ignore[arg-type]
    return generate_latest(registry)


@blp.route("/metrics")
class Metrics(MethodView):
    @blp.response(200, description="Prometheus text exposition format")
    @blp.doc(responses={"200": {"description": "Prometheus text exposition format",
                                 "content": {"text/plain": {"schema": {"type": "string"}}}}})
    @blp.alt_response(503, description="Postgres did not answer")
    def get(self) -> Response:
        """Jobs by state, queue depth, submit and placement counters, latency histograms, nodes, GPUs."""
        return Response(render(deps()), mimetype=None, content_type=CONTENT_TYPE_LATEST)
