"""GPU probes: one interface, a real NVML probe and a fake one, chosen by GPU_METRICS_MODE."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from overlay.errors import ConfigError, GpuProbeError
from overlay.gpus.fake import FakeProbe
from overlay.gpus.nvml import NvmlProbe
from overlay.model import ProbeReport

__all__ = ["FakeProbe", "GpuProbe", "NvmlProbe", "open_probe"]


class GpuProbe(Protocol):
    """Samples a node's GPUs. ``mode`` is "real" or "fake"; ``fallback_reason`` says why
    an "auto" probe is fake ("" when it was asked for or is real)."""

    mode: str
    fallback_reason: str

    def sample(self, busy: Mapping[int, str] | None = None) -> ProbeReport:
        """Read every GPU now; ``busy`` maps GPU index -> job id holding it."""
        ...

    def close(self) -> None: ...


def open_probe(mode: str, *, node_name: str, fake_gpus: str = "") -> GpuProbe:
    """Open the probe ``mode`` ("real", "fake" or "auto") asks for.

    Raises GpuProbeError when mode is "real" and NVML cannot be loaded, ConfigError when
    mode is unknown or ``fake_gpus`` is malformed (also in "auto", which may fall back).
    """
    if mode == "fake":
        return FakeProbe(node_name=node_name, fake_gpus=fake_gpus)
    if mode == "real":
        try:
            return NvmlProbe()
        except GpuProbeError as e:
            raise GpuProbeError(
                f"GPU_METRICS_MODE=real but {e.message}. "
                "Install the NVIDIA driver or set GPU_METRICS_MODE=fake",
                **e.fields,
            ) from e
    if mode == "auto":
        # Parse the fake inventory first so a bad FAKE_GPUS fails on every machine alike.
        fallback = FakeProbe(node_name=node_name, fake_gpus=fake_gpus)
        try:
            return NvmlProbe()
        except GpuProbeError as e:
            fallback.fallback_reason = f"GPU_METRICS_MODE=auto: {e.message}; using fake GPUs"
            return fallback
    raise ConfigError(
        f"GPU_METRICS_MODE={mode!r}: expected one of auto, real, fake", setting="GPU_METRICS_MODE"
    )
