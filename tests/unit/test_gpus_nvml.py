"""The real NVML probe against a test double of the pynvml module."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pynvml as real_pynvml
import pytest

from overlay.errors import GpuProbeError
from overlay.gpus import nvml, open_probe

MIB = 1024 * 1024
NOT_SUPPORTED = real_pynvml.NVMLError(real_pynvml.NVML_ERROR_NOT_SUPPORTED)
GPU_IS_LOST = real_pynvml.NVMLError(real_pynvml.NVML_ERROR_GPU_IS_LOST)


def a100(**overrides: Any) -> dict[str, Any]:
    """What NVML says about one A100; a value that is an NVMLError is raised instead."""
    return {
        "uuid": b"GPU-11111111-2222-3333-4444-555555555555",  # old bindings return bytes
        "name": "NVIDIA A100-SXM4-80GB",
        "memory": SimpleNamespace(total=81920 * MIB, used=1024 * MIB, free=80896 * MIB),
        "utilization": SimpleNamespace(gpu=42, memory=17),
        "temperature": 51,
        "power": 123456,  # mW
        "power_limit": 400000,
        "capability": (8, 0),
        "mig": [0, 0],
        "energy": 987654321,  # mJ since the driver loaded
    } | overrides


class FakeNvml:
    """Exactly the pynvml calls the probe makes, reusing the real module's error classes."""

    NVMLError = real_pynvml.NVMLError
    NVMLError_NotSupported = real_pynvml.NVMLError_NotSupported
    NVMLError_FunctionNotFound = real_pynvml.NVMLError_FunctionNotFound
    NVML_TEMPERATURE_GPU = real_pynvml.NVML_TEMPERATURE_GPU
    NVML_DEVICE_MIG_ENABLE = real_pynvml.NVML_DEVICE_MIG_ENABLE

    def __init__(self, gpus: list[dict[str, Any]], init_error: Exception | None = None) -> None:
        self.gpus, self.init_error = gpus, init_error
        self.initialised = self.shut_down = 0

    def nvmlInit(self) -> None:
        if self.init_error:
            raise self.init_error
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self.shut_down += 1

    def nvmlSystemGetDriverVersion(self) -> bytes:
        return b"550.54.15"

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        return 12040

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def _field(self, handle: int, key: str) -> Any:
        value = self.gpus[handle][key]
        if isinstance(value, Exception):
            raise value
        return value

    def nvmlDeviceGetUUID(self, h: int) -> Any:
        return self._field(h, "uuid")

    def nvmlDeviceGetName(self, h: int) -> Any:
        return self._field(h, "name")

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        return self._field(h, "memory")

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        return self._field(h, "utilization")

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> Any:
        assert sensor == real_pynvml.NVML_TEMPERATURE_GPU
        return self._field(h, "temperature")

    def nvmlDeviceGetPowerUsage(self, h: int) -> Any:
        return self._field(h, "power")

    def nvmlDeviceGetEnforcedPowerLimit(self, h: int) -> Any:
        return self._field(h, "power_limit")

    def nvmlDeviceGetCudaComputeCapability(self, h: int) -> Any:
        return self._field(h, "capability")

    def nvmlDeviceGetMigMode(self, h: int) -> Any:
        return self._field(h, "mig")

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> Any:
        return self._field(h, "energy")


@pytest.fixture
def use_nvml(monkeypatch: pytest.MonkeyPatch):
    def install(fake: FakeNvml) -> FakeNvml:
        monkeypatch.setattr(nvml, "pynvml", fake)
        return fake

    return install


def test_real_probe_reads_every_field_of_each_gpu(use_nvml) -> None:
    # Given two GPUs, the second an H100 with MIG on
    h100 = a100(
        uuid="GPU-66666666-7777-8888-9999-000000000000",
        name=b"NVIDIA H100 80GB HBM3",
        capability=(9, 0),
        mig=[1, 1],
    )
    fake = use_nvml(FakeNvml([a100(), h100]))

    # When the real probe samples
    probe = open_probe("real", node_name="node-a")
    report = probe.sample()

    # Then every field is read, bytes decoded, mW turned into W
    assert (report.mode, report.errors) == ("real", ())
    assert (report.driver_version, report.cuda_version) == ("550.54.15", "12.4")
    first, second = report.gpus
    assert first.index == 0 and first.uuid == "GPU-11111111-2222-3333-4444-555555555555"
    assert first.name == "NVIDIA A100-SXM4-80GB"
    assert (first.memory_total_mb, first.memory_used_mb, first.memory_free_mb) == (
        81920,
        1024,
        80896,
    )
    assert (first.utilization_gpu_pct, first.utilization_memory_pct) == (42, 17)
    assert first.temperature_c == 51
    assert (first.power_draw_w, first.power_limit_w) == (123.456, 400.0)
    assert (first.compute_capability, first.mig_mode) == ("8.0", "disabled")
    assert (second.index, second.name) == (1, "NVIDIA H100 80GB HBM3")
    assert (second.compute_capability, second.mig_mode) == ("9.0", "enabled")
    assert first.energy_mj == 987654321

    # And NVML is initialised once and shut down once on close
    probe.close()
    probe.close()
    assert (fake.initialised, fake.shut_down) == (1, 1)


def test_a_gpu_that_fell_off_the_bus_is_left_out_and_named_in_errors(use_nvml) -> None:
    # Given GPU 0 is lost
    use_nvml(FakeNvml([a100(memory=GPU_IS_LOST), a100()]))

    # When sampled
    report = open_probe("real", node_name="node-a").sample()

    # Then GPU 1 is still reported and the error names GPU 0 and why
    assert [gpu.index for gpu in report.gpus] == [1]
    (error,) = report.errors
    assert "GPU 0" in error and "GPU is lost" in error


def test_unsupported_optional_fields_read_as_none_not_a_missing_gpu(use_nvml) -> None:
    # Given a GPU without power, temperature, utilization or MIG readings
    use_nvml(
        FakeNvml(
            [
                a100(
                    power=NOT_SUPPORTED,
                    power_limit=NOT_SUPPORTED,
                    temperature=NOT_SUPPORTED,
                    utilization=NOT_SUPPORTED,
                    mig=NOT_SUPPORTED,
                    energy=NOT_SUPPORTED,
                )
            ]
        )
    )

    # When sampled
    (gpu,) = open_probe("real", node_name="node-a").sample().gpus

    # Then the GPU is there with those fields empty
    assert (gpu.power_draw_w, gpu.power_limit_w, gpu.temperature_c, gpu.mig_mode) == (
        None,
        None,
        None,
        None,
    )
    assert gpu.utilization_gpu_pct == 0  # GpuDevice types utilization as int
    assert gpu.energy_mj is None  # pre-Volta: energy comes from power samples instead
    assert gpu.memory_total_mb == 81920


def test_real_mode_without_nvml_fails_with_one_clear_line(use_nvml) -> None:
    # Given NVML's library is missing
    use_nvml(FakeNvml([], init_error=real_pynvml.NVMLError(real_pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)))

    # When real mode is asked for, then it says why and what to do, on one line
    with pytest.raises(GpuProbeError) as raised:
        open_probe("real", node_name="node-a")
    message = raised.value.message
    assert "\n" not in message
    assert message.startswith("GPU_METRICS_MODE=real but NVML could not be loaded")
    assert "NVML Shared Library Not Found" in message
    assert "GPU_METRICS_MODE=fake" in message


def test_real_mode_without_the_pynvml_package_fails_clearly(monkeypatch) -> None:
    monkeypatch.setattr(nvml, "pynvml", None)

    with pytest.raises(GpuProbeError, match="nvidia-ml-py package is not installed"):
        open_probe("real", node_name="node-a")


def test_auto_mode_falls_back_to_fake_gpus_and_says_why(use_nvml) -> None:
    # Given NVML's driver is not loaded
    use_nvml(FakeNvml([], init_error=real_pynvml.NVMLError(real_pynvml.NVML_ERROR_DRIVER_NOT_LOADED)))

    # When auto mode opens a probe
    probe = open_probe("auto", node_name="node-b")

    # Then it is the fake one, with the reason kept for agent health
    assert probe.mode == "fake"
    assert probe.sample().mode == "fake"
    assert "Driver Not Loaded" in probe.fallback_reason


def test_auto_mode_uses_nvml_when_it_loads(use_nvml) -> None:
    use_nvml(FakeNvml([a100()]))

    probe = open_probe("auto", node_name="node-a")

    assert (probe.mode, probe.fallback_reason) == ("real", "")
