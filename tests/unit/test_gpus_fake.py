"""The fake probe: its inventory syntax, per-node defaults and readings that follow jobs."""

from __future__ import annotations

import re

import pytest

from overlay.errors import ConfigError
from overlay.gpus import open_probe
from overlay.gpus.fake import FakeGpu, FakeProbe, compute_capability, parse_fake_gpus

A100 = "NVIDIA A100-SXM4-80GB"
H100 = "NVIDIA H100 80GB HBM3"


def test_fake_gpus_groups_expand_to_one_entry_per_gpu() -> None:
    gpus = parse_fake_gpus(f"4x{A100}:81920, 2x{H100}:81559")

    assert gpus == (FakeGpu(name=A100, memory_mb=81920),) * 4 + (FakeGpu(name=H100, memory_mb=81559),) * 2


@pytest.mark.parametrize(
    "bad", ["", "A100:81920", "2xA100", "0xA100:81920", "2xA100:lots", f"2x{A100}:81920,"]
)
def test_malformed_fake_gpus_is_a_config_error_naming_the_part(bad: str) -> None:
    with pytest.raises(ConfigError, match="FAKE_GPUS") as raised:
        parse_fake_gpus(bad)
    assert raised.value.fields["setting"] == "FAKE_GPUS"


@pytest.mark.parametrize(
    ("node", "count", "name", "memory"),
    [("node-a", 4, A100, 81920), ("node-b", 2, H100, 81559), ("gpu-box-7", 2, A100, 81920)],
)
def test_empty_fake_gpus_uses_the_node_default(node, count, name, memory) -> None:
    report = open_probe("fake", node_name=node).sample()

    assert len(report.gpus) == count
    assert {(gpu.name, gpu.memory_total_mb) for gpu in report.gpus} == {(name, memory)}


def test_fake_gpus_overrides_the_node_default() -> None:
    report = FakeProbe(node_name="node-a", fake_gpus="1xNVIDIA L4:23034").sample()

    (gpu,) = report.gpus
    assert (gpu.name, gpu.memory_total_mb, gpu.compute_capability) == ("NVIDIA L4", 23034, "8.9")


@pytest.mark.parametrize(
    ("name", "capability"),
    [
        (A100, "8.0"),
        (H100, "9.0"),
        ("NVIDIA H200", "9.0"),
        ("NVIDIA L40S", "8.9"),
        ("Tesla V100-SXM2-32GB", "7.0"),
        ("Tesla T4", "7.5"),
        ("NVIDIA GeForce RTX 3090", "8.6"),
        ("NVIDIA GeForce RTX 4090", "8.9"),
        ("Imaginary GPU", None),
    ],
)
def test_compute_capability_follows_the_model_name(name, capability) -> None:
    assert compute_capability(name) == capability


def test_busy_gpus_read_loaded_and_idle_ones_read_quiet() -> None:
    # Given node-a's four GPUs with a job holding GPU 2
    probe = FakeProbe(node_name="node-a")

    # When sampled many times
    for _ in range(20):
        gpus = probe.sample({2: "job-1"}).gpus

        # Then the held GPU is busier, fuller, warmer and hungrier than every idle one
        busy, idle = gpus[2], [g for g in gpus if g.index != 2]
        for quiet in idle:
            assert quiet.utilization_gpu_pct <= 5 < 60 <= busy.utilization_gpu_pct
            assert quiet.memory_used_mb < 1024 < 4096 <= busy.memory_used_mb
            assert quiet.temperature_c < busy.temperature_c
            assert quiet.power_draw_w < busy.power_draw_w <= busy.power_limit_w == 400.0


def test_fake_readings_are_shaped_like_nvml_readings() -> None:
    report = FakeProbe(node_name="node-b").sample()

    assert (report.mode, report.errors) == ("fake", ())
    for gpu in report.gpus:
        assert gpu.memory_used_mb + gpu.memory_free_mb == gpu.memory_total_mb
        assert (gpu.compute_capability, gpu.mig_mode, gpu.power_limit_w) == (
            "9.0",
            "disabled",
            700.0,
        )
        assert gpu.temperature_c is not None and gpu.power_draw_w is not None


def test_uuids_are_nvml_shaped_unique_and_stable_across_samples() -> None:
    probe = FakeProbe(node_name="node-a")

    first = [gpu.uuid for gpu in probe.sample().gpus]
    later = [gpu.uuid for gpu in probe.sample({0: "job-1"}).gpus]
    other_node = [gpu.uuid for gpu in FakeProbe(node_name="node-c").sample().gpus]

    assert first == later
    assert len(set(first)) == 4 and not set(first) & set(other_node)
    assert all(
        re.fullmatch(r"GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", u) for u in first
    )


def test_same_node_gives_the_same_readings_sample_for_sample() -> None:
    # (the energy counter follows the clock, so both read the same one)
    one = FakeProbe(node_name="node-a", clock=iter(range(0, 100, 5)).__next__)
    two = FakeProbe(node_name="node-a", clock=iter(range(0, 100, 5)).__next__)

    assert [one.sample() for _ in range(3)] == [two.sample() for _ in range(3)]


def test_a_scripted_job_reads_its_utilization_then_the_last_value_and_energy_counts_up() -> None:
    # Given a probe on a stepping clock and a job scripted to read 90% then 0%
    probe = FakeProbe(node_name="node-a", clock=iter(range(0, 100, 10)).__next__)
    probe.script("job-1", (90, 0))

    # When it samples four times with the job on GPU 1
    reports = [probe.sample({1: "job-1"}) for _ in range(4)]

    # Then GPU 1 reads 90, 0, 0, 0; the energy counter grows by power x 10 s each time
    assert [r.gpus[1].utilization_gpu_pct for r in reports] == [90, 0, 0, 0]
    counters = [r.gpus[1].energy_mj for r in reports]
    assert counters[0] == 0
    for before, after, report in zip(counters, counters[1:], reports[1:], strict=False):
        assert after is not None and before is not None
        assert abs((after - before) - report.gpus[1].power_draw_w * 10 * 1000) <= 1
