"""The API's GPU efficiency: a job's ``efficiency`` and ``idle_since``, idle_ok at submit,
/api/efficiency/idle and /api/efficiency/report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from overlay.efficiency import GpuSample, fold
from overlay.gpus.fake import FakeProbe
from overlay.model import Placement
from overlay.store import gangs
from overlay.store import jobs as job_store
from overlay.store import nodes as node_store
from overlay.store import samples as sample_store

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def an_hour_ago() -> datetime:
    """Taken when the test runs, not when the module was collected (minutes earlier in a full run)."""
    return datetime.now(UTC) - timedelta(hours=1)


def sampled(sessions, job_id: str, utils: list[int], *, used: int = 2048) -> None:
    """The agent folded these readings of GPU 0 into ``job_id``, 5 s apart."""
    usage = None
    for i, u in enumerate(utils):
        usage = fold(usage, GpuSample(job_id=job_id, gpu_index=0, util_pct=u, memory_used_mb=used,
                                      memory_total_mb=81920, power_w=400.0, seconds=5.0),
                     now=T0 + timedelta(seconds=5 * i), idle_util_pct=5)
    assert usage is not None
    with sessions.begin() as s:
        sample_store.save(s, [usage], now=T0 + timedelta(seconds=5 * len(utils)))


def running(client, sessions, job_id: str, *, gpu: int = 0, **body) -> None:
    with sessions.begin() as s:
        node_store.record_heartbeat(s, name="node-a", hostname="a", labels={}, agent_health={},
                                    report=FakeProbe(node_name="node-a").sample(), now=T0)
    response = client.post("/api/jobs", json={"job_id": job_id, "cmd": ["train"], "gpus": 1, **body})
    assert response.status_code == 201
    with sessions.begin() as s:
        job = job_store.place(s, job_id, Placement(node="node-a", gpus=(gpu,)), now=T0)
        gangs.start(s, job_id, attempt=job.attempt, part=0, node="node-a", now=T0)


def test_a_job_shows_its_efficiency_once_sampled(client, sessions) -> None:
    # Given a running job asking 80 GiB, not yet sampled
    running(client, sessions, "j1", gpu_memory_mb=81920)
    assert client.get("/api/jobs/j1").get_json()["efficiency"] is None

    # When the agent has sampled it at 10% and 40%, 9.1 GiB at peak
    sampled(sessions, "j1", [10, 40], used=9318)

    # Then GET /api/jobs/j1 shows the summary and the status line
    job = client.get("/api/jobs/j1").get_json()
    eff = job["efficiency"]
    assert (eff["util_mean_pct"], eff["util_max_pct"], eff["samples"]) == (25.0, 40, 2)
    assert eff["memory_peak_mb"] == {"0": 9318} and eff["gpu_memory_mb_asked"] == 81920
    assert eff["energy_j"] == 4000 and eff["gpu_seconds"] == 10
    assert eff["line"] == "GPU util 25% mean / 40% max · peak memory 9.1 of 80 GiB (asked 80) · 1.1 Wh"
    assert job["idle_since"] is None


def test_idle_jobs_are_listed_and_idle_ok_is_recorded_at_submit(client, sessions) -> None:
    # Given two running jobs, one submitted idle_ok, the other marked idle by its agent
    running(client, sessions, "lazy")
    running(client, sessions, "notebook", gpu=1, idle_ok=True)
    with sessions.begin() as s:
        sample_store.mark_idle(s, "lazy", an_hour_ago(), attempt=1, node="node-a",
                               reason="idle: GPUs below 5% for 30m")
        jobs = sample_store.running(s, ["lazy", "notebook"])
    assert jobs["notebook"].idle_ok and not jobs["lazy"].idle_ok

    # Then the idle list names the lazy one, idle for about an hour; its job shows idle_since
    (idle,) = client.get("/api/efficiency/idle").get_json()["jobs"]
    assert (idle["job_id"], idle["node"], idle["gpus"]) == ("lazy", "node-a", [0])
    assert 3500 < idle["idle_seconds"] < 3700
    assert client.get("/api/jobs/lazy").get_json()["idle_since"] is not None


def test_idle_ok_must_be_a_boolean(client) -> None:
    response = client.post("/api/jobs", json={"cmd": ["x"], "idle_ok": 1})
    assert response.status_code == 422 and "idle_ok" in str(response.get_json())


def test_the_report_groups_by_user_and_suggests_memory(client, sessions) -> None:
    # Given one job that asked 80 GiB and used 2 GiB at 0-10%
    running(client, sessions, "big", gpu_memory_mb=81920)
    sampled(sessions, "big", [0, 10, 0, 2])

    # When the report is asked per user for the last day
    report = client.get("/api/efficiency/report?by=user&since_s=86400").get_json()

    # Then the implicit user has 20 GPU-seconds, 15 of them idle, and a 3 GiB suggestion
    (group,) = report["groups"]
    assert group["group"] == "default" and group["jobs"] == 1
    assert group["gpu_hours"] == round(20 / 3600, 4) and group["idle_gpu_hours"] == round(15 / 3600, 4)
    assert [(o["job_id"], o["suggested_mb"]) for o in report["over_asked"]] == [("big", 3072)]
    # And nothing sampled within the last second... of another account
    assert client.get("/api/efficiency/report?account=other").get_json()["groups"] == []
    assert client.get("/api/efficiency/report?by=node").status_code == 422


def test_a_nul_in_the_reports_user_or_account_is_a_422_naming_the_field(client) -> None:
    for field in ("user", "account"):
        response = client.get(f"/api/efficiency/report?{field}=a%00b")
        assert response.status_code == 422, response.get_data(as_text=True)
        assert "NUL" in str(response.get_json()) and field in str(response.get_json())


def test_the_idle_gauge_names_each_idle_job_with_its_user_and_account(client, sessions) -> None:
    # Given a running job marked idle an hour ago, and one that is not idle
    running(client, sessions, "lazy")
    running(client, sessions, "busy", gpu=1)
    with sessions.begin() as s:
        sample_store.mark_idle(s, "lazy", an_hour_ago(), attempt=1, node="node-a")

    # When Prometheus scrapes
    text = client.get("/metrics").get_data(as_text=True)

    # Then the gauge has the idle job, about 3600 s, and not the busy one
    (line,) = [x for x in text.splitlines() if x.startswith("overlay_job_idle_seconds{")]
    assert 'job="lazy"' in line and 'user="default"' in line and 'account="default"' in line
    assert 3500 < float(line.rsplit(" ", 1)[1]) < 3700


def test_the_dashboard_marks_the_gpus_of_idle_jobs(client) -> None:
    response = client.get("/static/dashboard.js")
    script = response.get_data(as_text=True)
    response.close()
    assert 'getJson("/api/efficiency/idle")' in script and '"util idle"' in script
