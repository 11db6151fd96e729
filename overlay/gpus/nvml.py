"""The real GPU probe: reads every GPU of this machine through NVML (nvidia-ml-py)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from overlay.errors import GpuProbeError
from overlay.model import GpuDevice, ProbeReport

try:
    import pynvml
except ImportError:  # opening the probe says so; importing this module must stay safe
    pynvml = None

MIB = 1024 * 1024
T = TypeVar("T")


class NvmlProbe:
    """Initialises NVML once when made and shuts it down on ``close()``."""

    mode = "real"
    fallback_reason = ""

    def __init__(self) -> None:
        """Load NVML; raise GpuProbeError saying why it could not be loaded."""
        if pynvml is None:
            raise GpuProbeError(
                "NVML could not be loaded: the nvidia-ml-py package is not installed",
                reason="pynvml not installed",
            )
        try:
            pynvml.nvmlInit()
        except (pynvml.NVMLError, OSError) as e:
            raise GpuProbeError(f"NVML could not be loaded: {_describe(e)}", reason=str(e)) from e
        self._open = True
        # Neither version changes without reloading the driver, so read them once.
        self.driver_version = _optional(lambda: _text(pynvml.nvmlSystemGetDriverVersion()))
        self.cuda_version = _optional(_cuda_version)

    def sample(self, busy: Mapping[int, str] | None = None) -> ProbeReport:
        """Read every GPU. A GPU NVML fails on is left out and named in ``errors``.

        ``busy`` is ignored: real readings follow real load.
        """
        try:
            count = pynvml.nvmlDeviceGetCount()
        except pynvml.NVMLError as e:
            return self._report((), [f"could not count GPUs: {_describe(e)}"])
        gpus: list[GpuDevice] = []
        errors: list[str] = []
        for index in range(count):
            try:
                gpus.append(_read_gpu(index))
            except pynvml.NVMLError as e:
                errors.append(f"GPU {index} left out: {_describe(e)}")
        return self._report(tuple(gpus), errors)

    def close(self) -> None:
        """Shut NVML down; closing twice does nothing."""
        if self._open:
            self._open = False
            # Nothing is left to release if it fails, and closing must not fail the caller.
            with contextlib.suppress(pynvml.NVMLError):
                pynvml.nvmlShutdown()

    def _report(self, gpus: tuple[GpuDevice, ...], errors: list[str]) -> ProbeReport:
        return ProbeReport(
            mode=self.mode,
            gpus=gpus,
            driver_version=self.driver_version,
            cuda_version=self.cuda_version,
            errors=tuple(errors),
        )


def _read_gpu(index: int) -> GpuDevice:
    """Read one GPU; raise NVMLError when a required field fails (e.g. the GPU is lost)."""
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    util = _optional(lambda: pynvml.nvmlDeviceGetUtilizationRates(handle))
    power = _optional(lambda: pynvml.nvmlDeviceGetPowerUsage(handle))
    limit = _optional(lambda: pynvml.nvmlDeviceGetEnforcedPowerLimit(handle))
    capability = _optional(lambda: pynvml.nvmlDeviceGetCudaComputeCapability(handle))
    # Volta and newer count the energy they used (mJ); older GPUs say NotSupported.
    energy = _optional(lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle))
    return GpuDevice(
        index=index,
        uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
        name=_text(pynvml.nvmlDeviceGetName(handle)),
        memory_total_mb=memory.total // MIB,
        memory_used_mb=memory.used // MIB,
        memory_free_mb=memory.free // MIB,
        # GpuDevice types utilization as int, so an unsupported reading is 0.
        utilization_gpu_pct=util.gpu if util is not None else 0,
        utilization_memory_pct=util.memory if util is not None else 0,
        temperature_c=_optional(lambda: pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)),
        power_draw_w=power / 1000 if power is not None else None,
        power_limit_w=limit / 1000 if limit is not None else None,
        compute_capability=f"{capability[0]}.{capability[1]}" if capability else None,
        mig_mode=_optional(lambda: _mig_mode(handle)),
        energy_mj=int(energy) if energy is not None else None,
    )


def _mig_mode(handle: Any) -> str:
    current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
    return "enabled" if current == pynvml.NVML_DEVICE_MIG_ENABLE else "disabled"


def _cuda_version() -> str:
    """The driver's CUDA version as "12.4"; NVML encodes it as 1000 * major + 10 * minor."""
    try:
        encoded = pynvml.nvmlSystemGetCudaDriverVersion_v2()
    except (AttributeError, pynvml.NVMLError_FunctionNotFound):  # older driver or binding
        encoded = pynvml.nvmlSystemGetCudaDriverVersion()
    return f"{encoded // 1000}.{encoded % 1000 // 10}"


def _optional(read: Callable[[], T]) -> T | None:
    """``read()``, or None when this GPU or driver does not support the field.

    Other NVML errors (a lost GPU) propagate so the whole GPU is left out.
    """
    try:
        return read()
    except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_FunctionNotFound):
        return None


def _text(value: bytes | str) -> str:
    # Older nvidia-ml-py returns bytes, newer returns str.
    return value.decode() if isinstance(value, bytes) else str(value)


def _describe(error: Exception) -> str:
    code = getattr(error, "value", None)
    return f"{error} (NVML error {code})" if code is not None else str(error)
