"""Public GPU-cluster traces as simulator input (docs/simulate.md): the Alibaba GPU cluster
trace v2023 pod and node tables, a Philly/Helios-style job table, and a plain fleet CSV.

Each reader turns rows into the simulator's own values (SimJob, NodeSnapshot) and raises
WorkloadError naming each bad line; rows that never ran (no start or end) are left out.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from overlay.errors import WorkloadError
from overlay.model import GpuDevice, JobSpec, NodeSnapshot
from overlay.workload import CMD, SimJob

ALIBABA_POD = ("name", "num_gpu", "gpu_milli", "creation_time", "deletion_time")
PHILLY_JOB = ("job_id", "gpu_num", "submit_time", "start_time", "end_time")
ALIBABA_NODE = ("sn", "model")
PLAIN_FLEET = ("name", "gpus")
# Memory per GPU (MiB) of the Alibaba trace's model names; an unknown model gets DEFAULT_MB.
MODEL_MB = {"V100M16": 16384, "V100M32": 32768, "P100": 16384, "T4": 15360, "A10": 24576,
            "A100": 81920, "H100": 81559, "L4": 23034, "G2": 16384, "G3": 32768}
DEFAULT_MB = 16384
# Alibaba's qos as a priority: latency-sensitive first, best-effort last.
QOS_PRIORITY = {"LS": 100, "GUARANTEED": 50, "BURSTABLE": 0, "BE": -100}


def header(path: Path) -> list[str]:
    """The file's first line's columns, lower-cased ([] when empty or unreadable as CSV)."""
    try:
        with open(path, newline="") as f:
            first = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise WorkloadError(path, [str(e)]) from e
    return [c.strip().lower() for c in first]


def trace_kind(columns: list[str]) -> str | None:
    """"alibaba" or "philly" when the columns are one of those tables, else None."""
    if all(c in columns for c in ALIBABA_POD):
        return "alibaba"
    if all(c in columns for c in PHILLY_JOB):
        return "philly"
    return None


def _rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            reader.fieldnames = [c.strip().lower() for c in reader.fieldnames or []]
            for row in reader:
                yield reader.line_num, {k: (v or "").strip() for k, v in row.items() if k is not None}
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise WorkloadError(path, [str(e)]) from e


def _time(text: str) -> float | None:
    """Seconds: a number (seconds, e.g. since the trace's start or the epoch), or a date-time
    such as ``2020-04-01 00:00:00`` (UTC when it names no zone); None when empty or bad."""
    if not text or text.lower() in ("none", "nan", "null"):
        return None
    try:
        value = float(text)
        return value if math.isfinite(value) else None
    except ValueError:
        pass
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def _count(text: str) -> float | None:
    try:
        value = float(text or "0")
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _safe_id(text: str, line: int) -> str:
    kept = "".join(c if c.isalnum() or c in "._-" else "-" for c in text)[:128]
    return kept or f"line-{line}"


def _read(path: Path, parse: Callable[[int, dict[str, str]], tuple[float, JobSpec, float] | None]) \
        -> list[SimJob]:
    parsed: list[tuple[float, JobSpec, float]] = []
    errors: list[str] = []
    seen: set[str] = set()
    for line, row in _rows(path):
        try:
            job = parse(line, row)
        except ValueError as e:
            errors.append(f"line {line}: {e}")
            continue
        if job is None:
            continue
        submit, spec, duration = job
        if spec.job_id in seen:  # traces repeat names across restarts of a pod
            spec = replace(spec, job_id=f"{spec.job_id[:120]}.{line}")
        seen.add(spec.job_id)
        parsed.append((submit, spec, duration))
    if errors:
        raise WorkloadError(path, errors)
    if not parsed:
        raise WorkloadError(path, ["no job that ran (with GPUs, a start and an end)"])
    first = min(submit for submit, _, _ in parsed)
    jobs = [SimJob(spec=spec, submit_s=submit - first, duration_s=duration)
            for submit, spec, duration in parsed]
    return sorted(jobs, key=lambda j: j.submit_s)


def alibaba_model(spec: str) -> str:
    """gpu_spec as a gpu_model constraint: one model as is; alternatives (``V100M16|V100M32``)
    as their common prefix (``V100M``), or none when they share none."""
    options = [o.strip() for o in spec.split("|") if o.strip()]
    if len(options) <= 1:
        return options[0] if options else ""
    prefix = options[0]
    for option in options[1:]:
        while not option.startswith(prefix):
            prefix = prefix[:-1]
    return prefix


def _alibaba_pod(line: int, row: dict[str, str]) -> tuple[float, JobSpec, float] | None:
    gpus, milli = _count(row.get("num_gpu", "")), _count(row.get("gpu_milli", ""))
    if gpus is None or milli is None:
        raise ValueError(f"num_gpu and gpu_milli must be numbers >= 0, got {row.get('num_gpu')!r}, "
                         f"{row.get('gpu_milli')!r}")
    created, deleted = _time(row.get("creation_time", "")), _time(row.get("deletion_time", ""))
    started = _time(row.get("scheduled_time", "")) or created
    if gpus == 0 or created is None or deleted is None or started is None or deleted < started:
        return None  # a CPU pod, or one that never ran to its end in the trace
    # A share of a GPU (gpu_milli < 1000: several pods on one GPU) takes a whole GPU here.
    spec = JobSpec(job_id=_safe_id(row["name"], line), cmd=CMD, gpus=math.ceil(gpus),
                   gpu_model=alibaba_model(row.get("gpu_spec", "")),
                   priority=QOS_PRIORITY.get(row.get("qos", "").upper(), 0))
    return created, spec, deleted - started


def _philly_job(line: int, row: dict[str, str]) -> tuple[float, JobSpec, float] | None:
    gpus = _count(row.get("gpu_num", ""))
    if gpus is None:
        raise ValueError(f"gpu_num must be a number >= 0, got {row.get('gpu_num')!r}")
    submit, start, end = (_time(row.get(c, "")) for c in ("submit_time", "start_time", "end_time"))
    if gpus == 0 or submit is None or start is None or end is None or end < start:
        return None
    user, account = (_safe_id(row.get(column) or "default", line) for column in ("user", "vc"))
    spec = JobSpec(job_id=_safe_id(row["job_id"], line), cmd=CMD, gpus=math.ceil(gpus), user=user,
                   account=account)
    return submit, spec, end - start


def read_trace(path: Path, kind: str) -> list[SimJob]:
    """The jobs of an ``alibaba`` pod table or a ``philly`` job table, in submit order."""
    return _read(path, _alibaba_pod if kind == "alibaba" else _philly_job)


# -- fleets ------------------------------------------------------------------------------------

def read_fleet(path: Path) -> list[NodeSnapshot]:
    """Nodes from the Alibaba node table (``sn, cpu_milli, memory_mib, gpu, model``) or a plain
    CSV (``name, gpus, model, memory_mb, labels`` with labels as ``k=v;k=v``). Nodes without
    GPUs are left out. Raises WorkloadError naming each bad line."""
    columns = header(path)
    alibaba = all(c in columns for c in ALIBABA_NODE)
    if not alibaba and not all(c in columns for c in PLAIN_FLEET):
        raise WorkloadError(path, [f"header: a fleet needs columns {', '.join(ALIBABA_NODE)} and gpu "
                                   f"(Alibaba node table) or {', '.join(PLAIN_FLEET)} (plain)"])
    nodes: list[NodeSnapshot] = []
    errors: list[str] = []
    inventories: dict[tuple[str, int, int], tuple[GpuDevice, ...]] = {}
    for line, row in _rows(path):
        try:
            node = _node(row, line, alibaba=alibaba, inventories=inventories)
        except ValueError as e:
            errors.append(f"line {line}: {e}")
            continue
        if node is not None:
            nodes.append(node)
    if errors:
        raise WorkloadError(path, errors)
    if not nodes:
        raise WorkloadError(path, ["no node with GPUs"])
    return nodes


def _node(row: dict[str, str], line: int, *, alibaba: bool,
          inventories: dict[tuple[str, int, int], tuple[GpuDevice, ...]]) -> NodeSnapshot | None:
    raw = (row.get("gpu") or row.get("num_gpu") or "0") if alibaba else row.get("gpus", "")
    count = _count(raw)
    if count is None or count != int(count):
        raise ValueError("the GPU count must be a whole number >= 0")
    if count == 0:
        return None
    model = row.get("model") or "GPU"
    memory = _count(row.get("memory_mb", "")) if not alibaba and row.get("memory_mb") else \
        MODEL_MB.get(model.upper(), DEFAULT_MB)
    if memory is None:
        raise ValueError("memory_mb must be a number of MiB >= 0")
    key = (model, int(memory), int(count))
    if key not in inventories:  # nodes of one model share their devices, as in overlay.workload
        inventories[key] = tuple(GpuDevice(index=i, uuid=f"SIM-{model}-{i}", name=model,
                                           memory_total_mb=int(memory)) for i in range(int(count)))
    name = row.get("sn") if alibaba else row.get("name")
    labels: dict[str, Any] = {"gpu.model": model}
    for item in filter(None, (row.get("labels") or "").split(";")):
        key_, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"labels must be key=value pairs split by ';', got {item!r}")
        labels[key_.strip()] = value.strip()
    return NodeSnapshot(name=name or f"node-{line}", gpus=inventories[key], labels=labels)
