"""Prometheus metrics for one probe report, named and labelled as NVIDIA's dcgm-exporter does.

Dashboards and alerts written for dcgm-exporter work on an overlay agent's /metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from operator import attrgetter

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from overlay.model import GpuDevice, ProbeReport

__all__ = ["CONTENT_TYPE_LATEST", "render_metrics"]

DCGM_LABELS = ["gpu", "UUID", "device", "modelName", "Hostname"]

# (family, help as dcgm-exporter words it, the GpuDevice field it reads)
DCGM_GAUGES: tuple[tuple[str, str, Callable[[GpuDevice], float | None]], ...] = (
    ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", attrgetter("utilization_gpu_pct")),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", "Memory utilization (in %).", attrgetter("utilization_memory_pct")),
    ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", attrgetter("memory_used_mb")),
    ("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", attrgetter("memory_free_mb")),
    ("DCGM_FI_DEV_FB_TOTAL", "Framebuffer memory total (in MiB).", attrgetter("memory_total_mb")),
    ("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", attrgetter("temperature_c")),
    ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", attrgetter("power_draw_w")),
)


def render_metrics(
    report: ProbeReport,
    *,
    hostname: str,
    node: str,
    busy: Mapping[int, str] | None = None,
    extra: Mapping[str, float] | None = None,
) -> bytes:
    """The Prometheus text exposition (``CONTENT_TYPE_LATEST``) of ``report``.

    ``busy`` maps GPU index -> job id holding it; ``extra`` adds node-level gauges by
    name (e.g. ``{"overlay_jobs_running": 2}``), labelled ``node`` and ``Hostname``.
    """
    # A registry per call: nothing global, so two agents in one process cannot mix.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ReportCollector(report, hostname, node, busy or {}, extra or {}))
    return generate_latest(registry)


class _ReportCollector:
    def __init__(
        self,
        report: ProbeReport,
        hostname: str,
        node: str,
        busy: Mapping[int, str],
        extra: Mapping[str, float],
    ) -> None:
        self.report, self.hostname, self.node = report, hostname, node
        self.busy, self.extra = busy, extra

    def collect(self) -> Iterator[Metric]:
        yield from self._dcgm()
        yield self._allocated()
        node_labels = ["node", "Hostname"]
        errors = GaugeMetricFamily(
            "overlay_gpu_probe_errors",
            "GPUs or reads the last probe failed on.",
            labels=node_labels,
        )
        errors.add_metric([self.node, self.hostname], len(self.report.errors))
        yield errors
        for name, value in sorted(self.extra.items()):
            gauge = GaugeMetricFamily(name, f"overlay agent: {name}.", labels=node_labels)
            gauge.add_metric([self.node, self.hostname], value)
            yield gauge

    def _dcgm(self) -> Iterator[Metric]:
        for name, help_text, read in DCGM_GAUGES:
            family = GaugeMetricFamily(name, help_text, labels=DCGM_LABELS)
            for gpu in self.report.gpus:
                value = read(gpu)
                if value is not None:  # NVML did not support it: no sample, as dcgm-exporter
                    family.add_metric(self._labels(gpu), value)
            yield family

    def _allocated(self) -> Metric:
        family = GaugeMetricFamily(
            "overlay_gpu_allocated",
            "1 when an overlay job holds the GPU, else 0.",
            labels=[*DCGM_LABELS, "node", "job"],
        )
        for gpu in self.report.gpus:
            job = self.busy.get(gpu.index, "")
            family.add_metric([*self._labels(gpu), self.node, job], 1 if job else 0)
        return family

    def _labels(self, gpu: GpuDevice) -> list[str]:
        return [str(gpu.index), gpu.uuid, f"nvidia{gpu.index}", gpu.name, self.hostname]
