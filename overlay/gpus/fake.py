"""The fake GPU probe: a configured inventory whose readings follow the jobs holding it."""

from __future__ import annotations

import hashlib
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from overlay.errors import ConfigError
from overlay.model import GpuDevice, ProbeReport

# What a node gets when FAKE_GPUS is empty: the local stack's two nodes differ on purpose,
# so gpu_model and memory requests have something to choose between.
NODE_DEFAULTS = {
    "node-a": "4xNVIDIA A100-SXM4-80GB:81920",
    "node-b": "2xNVIDIA H100 80GB HBM3:81559",
}
OTHER_NODE_DEFAULT = "2xNVIDIA A100-SXM4-80GB:81920"

# (pattern on the model name, compute capability, power limit in W), first match wins.
MODELS: tuple[tuple[re.Pattern[str], str, float], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), capability, limit)
    for pattern, capability, limit in (
        (r"\bA100\b", "8.0", 400.0),
        (r"\bG?H(100|200)\b", "9.0", 700.0),
        (r"\bL40S?\b", "8.9", 300.0),
        (r"\bL4\b", "8.9", 72.0),
        (r"\bV100\b", "7.0", 300.0),
        (r"\bT4\b", "7.5", 70.0),
        (r"\bRTX 30\d0", "8.6", 350.0),
        (r"\bRTX 40\d0", "8.9", 450.0),
    )
)
UNKNOWN_POWER_LIMIT_W = 300.0
MIG_CAPABLE = ("8.0", "9.0")  # NVML says NotSupported (None) for the rest
GROUP = re.compile(r"^(\d+)\s*x\s*(.+?)\s*:\s*(\d+)$")


@dataclass(frozen=True, kw_only=True)
class FakeGpu:
    """One GPU of the fake inventory: its model name and memory in MiB."""

    name: str
    memory_mb: int


def parse_fake_gpus(text: str) -> tuple[FakeGpu, ...]:
    """``"2xNVIDIA A100-SXM4-80GB:81920,1xNVIDIA L4:23034"`` -> one FakeGpu per GPU.

    Raises ConfigError naming FAKE_GPUS and the group that is not ``COUNTxNAME:MEMORY_MIB``.
    """
    gpus: list[FakeGpu] = []
    for group in (part.strip() for part in text.split(",")):
        match = GROUP.match(group)
        if not match or int(match[1]) < 1 or int(match[3]) < 1:
            raise ConfigError(
                f"FAKE_GPUS group {group!r} is not COUNTxNAME:MEMORY_MIB "
                "(e.g. 2xNVIDIA A100-SXM4-80GB:81920)",
                setting="FAKE_GPUS",
                group=group,
            )
        gpus += [FakeGpu(name=match[2], memory_mb=int(match[3]))] * int(match[1])
    return tuple(gpus)


def default_fake_gpus(node_name: str) -> str:
    """The FAKE_GPUS text a node gets when none is configured."""
    return NODE_DEFAULTS.get(node_name, OTHER_NODE_DEFAULT)


def fake_uuid(node_name: str, index: int) -> str:
    """A stable NVML-style UUID for GPU ``index`` of ``node_name``."""
    h = hashlib.sha256(f"{node_name}/{index}".encode()).hexdigest()
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def compute_capability(name: str) -> str | None:
    """The CUDA compute capability of a model name as "major.minor"; None when unknown."""
    return next((cc for pattern, cc, _ in MODELS if pattern.search(name)), None)


def power_limit_w(name: str) -> float:
    """A plausible board power limit in W for a model name."""
    return next((w for pattern, _, w in MODELS if pattern.search(name)), UNKNOWN_POWER_LIMIT_W)


class FakeProbe:
    """Reports the inventory with readings that look idle or busy as ``busy`` says.

    Readings vary a little between samples but repeat exactly for the same node and
    sample number, so tests are deterministic without patching anything.
    """

    mode = "fake"

    def __init__(self, *, node_name: str, fake_gpus: str = "", fallback_reason: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        """Raise ConfigError when ``fake_gpus`` is malformed; empty uses the node's default."""
        self.node_name = node_name
        self.inventory = parse_fake_gpus(fake_gpus.strip() or default_fake_gpus(node_name))
        self.fallback_reason = fallback_reason
        self._samples = 0
        self._clock = clock
        self._lock = threading.Lock()
        # NVML's energy counter, modelled: mJ per GPU, advanced by power x time between samples.
        self._energy_mj = [0.0] * len(self.inventory)
        self._last_sampled: float | None = None
        # Scripted utilization per job (see ``script``): the values, and how many were read.
        self._scripts: dict[str, tuple[int, ...]] = {}
        self._script_reads: dict[str, int] = {}

    def script(self, job_id: str, utilization: tuple[int, ...]) -> None:
        """Make ``job_id``'s GPUs read these utilizations, one per sample, then the last for
        ever (what a job's OVERLAY_FAKE_UTIL asks for); an empty tuple ends the script."""
        with self._lock:
            if utilization:
                self._scripts.setdefault(job_id, utilization)
            else:
                self._scripts.pop(job_id, None)
                self._script_reads.pop(job_id, None)

    def sample(self, busy: Mapping[int, str] | None = None) -> ProbeReport:
        """Read every fake GPU; one in ``busy`` (index -> job id) reads as loaded, or as its
        job's script says."""
        with self._lock:
            self._samples += 1
            rng = random.Random(f"{self.node_name}/{self._samples}")
            held = busy or {}
            scripted = self._scripted(set(held.values()))
            now = self._clock()
            elapsed = 0.0 if self._last_sampled is None else max(0.0, now - self._last_sampled)
            self._last_sampled = now
            gpus = tuple(
                self._reading(index, gpu, busy=index in held, util=scripted.get(held.get(index, "")),
                              rng=rng, elapsed=elapsed)
                for index, gpu in enumerate(self.inventory)
            )
        return ProbeReport(mode=self.mode, gpus=gpus, driver_version="fake", cuda_version="fake")

    def close(self) -> None:
        """Nothing to release."""

    def _scripted(self, jobs: set[str]) -> dict[str, int]:
        """This sample's scripted utilization of each job in ``jobs`` that has a script."""
        out: dict[str, int] = {}
        for job_id in jobs & self._scripts.keys():
            values, read = self._scripts[job_id], self._script_reads.get(job_id, 0)
            out[job_id] = values[min(read, len(values) - 1)]
            self._script_reads[job_id] = read + 1
        return out

    def _reading(self, index: int, gpu: FakeGpu, *, busy: bool, util: int | None, rng: random.Random,
                 elapsed: float) -> GpuDevice:
        device = self._load(index, gpu, busy=busy, util=util, rng=rng)
        self._energy_mj[index] += (device.power_draw_w or 0.0) * elapsed * 1000
        return replace(device, energy_mj=int(self._energy_mj[index]))

    def _load(self, index: int, gpu: FakeGpu, *, busy: bool, util: int | None,
              rng: random.Random) -> GpuDevice:
        limit = power_limit_w(gpu.name)
        capability = compute_capability(gpu.name)
        if busy and util is not None:
            used = min(gpu.memory_mb, rng.randint(4096, 16384))
            load, mem_util = util, rng.randint(0, 80) if util else 0
            temp, power = rng.randint(35, 75), limit * (0.1 + 0.85 * util / 100)
        elif busy:
            used = min(gpu.memory_mb, rng.randint(4096, 16384))
            load, mem_util = rng.randint(60, 100), rng.randint(30, 80)
            temp, power = rng.randint(55, 75), limit * rng.uniform(0.6, 0.95)
        else:
            used = min(gpu.memory_mb, rng.randint(256, 640))
            load, mem_util = rng.randint(0, 5), rng.randint(0, 2)
            temp, power = rng.randint(30, 40), limit * rng.uniform(0.1, 0.15)
        return GpuDevice(
            index=index,
            uuid=fake_uuid(self.node_name, index),
            name=gpu.name,
            memory_total_mb=gpu.memory_mb,
            memory_used_mb=used,
            memory_free_mb=gpu.memory_mb - used,
            utilization_gpu_pct=load,
            utilization_memory_pct=mem_util,
            temperature_c=temp,
            power_draw_w=round(power, 3),
            power_limit_w=limit,
            compute_capability=capability,
            mig_mode="disabled" if capability in MIG_CAPABLE else None,
        )
