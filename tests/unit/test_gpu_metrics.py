"""The agent's /metrics: dcgm-exporter's names and labels, plus overlay's own gauges."""

from __future__ import annotations

import dataclasses

from prometheus_client.parser import text_string_to_metric_families

from overlay.gpus.fake import FakeProbe
from overlay.model import ProbeReport
from workers.gpu_metrics import CONTENT_TYPE_LATEST, render_metrics

DCGM = {
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_MEM_COPY_UTIL",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_FB_TOTAL",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_POWER_USAGE",
}


def parse(text: bytes) -> dict:
    return {family.name: family for family in text_string_to_metric_families(text.decode())}


def test_metrics_have_the_dcgm_families_with_dcgm_labels() -> None:
    # Given node-b's two fake GPUs
    report = FakeProbe(node_name="node-b").sample()

    # When rendered
    families = parse(render_metrics(report, hostname="host-1", node="node-b"))

    # Then each DCGM family has one sample per GPU, labelled as dcgm-exporter labels it
    assert families.keys() >= DCGM
    for name in DCGM:
        samples = families[name].samples
        assert [s.labels["gpu"] for s in samples] == ["0", "1"]
        for sample, gpu in zip(samples, report.gpus, strict=True):
            assert sample.labels == {
                "gpu": str(gpu.index),
                "UUID": gpu.uuid,
                "device": f"nvidia{gpu.index}",
                "modelName": "NVIDIA H100 80GB HBM3",
                "Hostname": "host-1",
            }
    used = families["DCGM_FI_DEV_FB_USED"].samples[1].value
    assert used == report.gpus[1].memory_used_mb
    assert CONTENT_TYPE_LATEST.startswith("text/plain")


def test_allocated_gauge_names_the_job_holding_each_gpu() -> None:
    report = FakeProbe(node_name="node-b").sample({1: "job-7"})

    families = parse(render_metrics(report, hostname="h", node="node-b", busy={1: "job-7"}))

    held = {s.labels["gpu"]: (s.labels["job"], s.value) for s in families["overlay_gpu_allocated"].samples}
    assert held == {"0": ("", 0), "1": ("job-7", 1)}
    assert "job" not in families["DCGM_FI_DEV_GPU_UTIL"].samples[0].labels


def test_unsupported_readings_are_skipped_and_probe_errors_counted() -> None:
    # Given a GPU without power or temperature readings and one GPU lost
    gpu = dataclasses.replace(
        FakeProbe(node_name="node-x").sample().gpus[0], power_draw_w=None, temperature_c=None
    )
    report = ProbeReport(mode="real", gpus=(gpu,), errors=("GPU 1 left out: GPU is lost",))

    # When rendered with an extra node gauge
    families = parse(render_metrics(report, hostname="h", node="node-x", extra={"overlay_jobs_running": 3}))

    # Then those families have no samples, and the counts are there
    assert families["DCGM_FI_DEV_POWER_USAGE"].samples == []
    assert families["DCGM_FI_DEV_GPU_TEMP"].samples == []
    assert families["overlay_gpu_probe_errors"].samples[0].value == 1
    (running,) = families["overlay_jobs_running"].samples
    assert (running.labels, running.value) == ({"node": "node-x", "Hostname": "h"}, 3)
