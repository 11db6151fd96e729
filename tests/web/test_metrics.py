"""GET /metrics: Prometheus text read from Postgres, parsed by prometheus-client's own parser."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from overlay.gpus import FakeProbe
from overlay.model import JobSpec, Placement
from overlay.states import JobState
from overlay.store import jobs as job_store
from overlay.store import nodes as node_store
from web.app import create_app
from web.deps import ApiDeps
from web.dispatch import Dispatcher
from web.waiter import JobWaiter
from workers.gpu_metrics import render_metrics

ROOT = Path(__file__).resolve().parents[2]
FAMILIES = {
    "overlay_jobs", "overlay_queue_depth", "overlay_queue_oldest_wait_seconds", "overlay_jobs_submitted",
    "overlay_placements", "overlay_job_transitions", "overlay_placement_latency_seconds",
    "overlay_queue_wait_seconds", "overlay_nodes", "overlay_gpus_allocated", "overlay_gpus_free",
    "overlay_gpus", "overlay_build_info",
}


def heartbeat(s, name: str, *, at: datetime) -> None:
    report = FakeProbe(node_name=name).sample()
    node_store.record_heartbeat(s, name=name, hostname="h", labels={}, report=report,
                                agent_health={}, now=at)


def submit(s, job_id: str, *, gpus: int, at: datetime) -> None:
    job_store.insert_job(s, JobSpec(job_id=job_id, cmd=("true",), gpus=gpus), now=at)


@pytest.fixture
def fleet(sessions):
    """node-a (4 GPUs), node-b (2, draining), node-c (offline); jobs done, running, queued."""
    now = datetime.now(UTC)
    t0 = now - timedelta(minutes=5)
    with sessions.begin() as s:
        heartbeat(s, "node-a", at=now)
        heartbeat(s, "node-b", at=now)
        heartbeat(s, "node-c", at=now - timedelta(hours=1))
        node_store.set_draining(s, "node-b", True)
        for job_id in ("done", "running", "queued"):
            submit(s, job_id, gpus=2 if job_id == "running" else 1, at=t0)
        job_store.place(s, "done", Placement(node="node-a", gpus=(0,)), now=t0 + timedelta(seconds=0.2))
        job_store.transition(s, "done", JobState.RUNNING, now=t0 + timedelta(seconds=0.4))
        job_store.transition(s, "done", JobState.DONE, now=t0 + timedelta(seconds=9))
        job_store.place(s, "running", Placement(node="node-a", gpus=(1, 2)), now=t0 + timedelta(seconds=40))
        job_store.transition(s, "running", JobState.RUNNING, now=t0 + timedelta(seconds=45))


def scrape(client) -> dict[str, dict[tuple, float]]:
    """{family: {(sample name, sorted labels): value}} from GET /metrics."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.content_type.startswith("text/plain; version=")
    return {
        f.name: {(x.name, tuple(sorted(x.labels.items()))): x.value for x in f.samples}
        for f in text_string_to_metric_families(response.text)
    }


def test_metrics_parse_and_carry_every_named_family(client, fleet):
    assert set(scrape(client)) >= FAMILIES


def test_jobs_by_state_and_queue_depth_count_the_rows(client, fleet):
    m = scrape(client)
    jobs = {dict(labels)["state"]: v for (_, labels), v in m["overlay_jobs"].items()}
    assert jobs == {"QUEUED": 1, "PLACED": 0, "RUNNING": 1, "DONE": 1, "FAILED": 0, "CANCELLED": 0}
    assert m["overlay_queue_depth"] == {("overlay_queue_depth", ()): 1}
    assert m["overlay_queue_oldest_wait_seconds"][("overlay_queue_oldest_wait_seconds", ())] >= 299


def test_counters_come_from_the_job_events(client, fleet):
    m = scrape(client)
    assert m["overlay_jobs_submitted"][("overlay_jobs_submitted_total", ())] == 3
    assert m["overlay_placements"][("overlay_placements_total", ())] == 2
    entered = m["overlay_job_transitions"]
    assert entered[("overlay_job_transitions_total", (("state", "RUNNING"),))] == 2
    assert entered[("overlay_job_transitions_total", (("state", "DONE"),))] == 1


def test_latency_histograms_bucket_the_job_timestamps(client, fleet):
    # Given placements 0.2 s and 40 s after submit, starts 0.4 s and 45 s after
    m = scrape(client)
    placement = m["overlay_placement_latency_seconds"]
    le = lambda bound: bucket(m, "overlay_placement_latency_seconds", bound)  # noqa: E731
    assert (le("0.1"), le("0.25"), le("30.0"), le("60.0")) == (0, 1, 1, 2)
    assert placement[("overlay_placement_latency_seconds_count", ())] == 2
    assert placement[("overlay_placement_latency_seconds_sum", ())] == pytest.approx(40.2, abs=0.01)
    waits = [bucket(m, "overlay_queue_wait_seconds", b) for b in ("0.25", "0.5", "30.0", "60.0", "+Inf")]
    assert waits == [0, 1, 1, 2, 2]


def bucket(m: dict, family: str, le: str) -> float:
    return m[family][(f"{family}_bucket", (("le", le),))]


def test_nodes_by_state_and_gpus_allocated_and_free(client, fleet):
    m = scrape(client)
    nodes = {dict(labels)["state"]: v for (_, labels), v in m["overlay_nodes"].items()}
    assert nodes == {"online": 1, "draining": 1, "stopping": 0, "offline": 1}
    per_node = lambda fam: {dict(l)["node"]: v for (_, l), v in m[fam].items()}  # noqa: E731,E741
    # The running job holds two of node-a's four; a draining or dead node offers none
    assert per_node("overlay_gpus_allocated") == {"node-a": 2, "node-b": 0, "node-c": 0}
    assert per_node("overlay_gpus_free") == {"node-a": 2, "node-b": 0, "node-c": 0}
    assert per_node("overlay_gpus") == {"node-a": 4, "node-b": 2, "node-c": 2}


def test_every_api_worker_reports_the_same_numbers(client, fleet, settings, sessions):
    # Given a second app, as gunicorn's second worker (or the first after a restart) would be
    other = create_app(settings, deps=ApiDeps(
        settings=settings, sessions=sessions, dispatcher=Dispatcher(settings.redis_url),
        waiter=JobWaiter(settings.database_url)))
    # Then its counters are the same: nothing is counted in process memory
    counters = lambda m: (m["overlay_jobs_submitted"], m["overlay_placements"])  # noqa: E731
    assert counters(scrape(other.test_client())) == counters(scrape(client))


def test_an_empty_database_still_scrapes(client):
    m = scrape(client)
    assert m["overlay_queue_depth"] == {("overlay_queue_depth", ()): 0}
    assert m["overlay_placement_latency_seconds"][("overlay_placement_latency_seconds_count", ())] == 0


def test_the_grafana_dashboard_queries_only_metrics_overlay_exports(client, fleet):
    # What the API exports, and what an agent exports for a node with one busy GPU
    api = sample_names(client.get("/metrics").text)
    report = FakeProbe(node_name="node-a").sample({0: "j1"})
    agent = sample_names(render_metrics(report, hostname="h", node="node-a", busy={0: "j1"}).decode())
    dashboard = json.loads((ROOT / "deploy/grafana/overlay.json").read_text())
    queried = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"\b(?:overlay|DCGM)_\w+", target["expr"])}
    assert len(queried) >= 10
    assert queried <= api | agent, f"not exported: {queried - api - agent}"


def sample_names(text: str) -> set[str]:
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}
