"""The simulator's I/O: reading a workload CSV, running each policy (in worker processes),
and writing the table, results.json and chart.svg. The simulation itself is
``overlay.simulation``; the CSV format is in docs/simulate.md.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from cli import traces
from cli.accounts import read_shares
from cli.workload_arrays import expand
from overlay.config import parse_labels
from overlay.errors import ConfigError, WorkloadError
from overlay.gang import MAX_NODES
from overlay.model import JobSpec
from overlay.policies import get_policy
from overlay.simulation import SimResult, simulate
from overlay.workload import CMD, SimJob, arrival_rate, synthetic_fleet, synthetic_jobs

REQUIRED = ("submit", "gpus", "duration_s")
OPTIONAL = ("job_id", "gpu_memory_mb", "gpu_model", "priority", "node_selector", "account", "user",
            "timeout_s", "array", "depends_on", "nodes")
JOB_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
SAMPLES = 400  # points per policy on the chart


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """One comparison: the fleet, the workload (synthetic unless ``workload``), the bound."""

    nodes: int
    gpus_per_node: int = 8
    jobs: int = 100_000
    seed: int = 0
    load: float = 0.95
    starve_after_s: float = 3600.0
    workload: Path | None = None
    shares: Path | None = None  # accounts' shares and quotas (cli/accounts.py)
    backfill: bool = False  # reservations for the first job that does not fit (README: Backfill)
    fleet: Path | None = None  # nodes from a file (cli/traces.py) instead of a synthetic fleet


# -- reading a workload ------------------------------------------------------------------------

def read_workload(path: Path) -> list[SimJob]:
    """The jobs of a workload CSV in submit order. Raises WorkloadError naming each bad line.

    An Alibaba v2023 pod table or a Philly/Helios job table is read as such (cli/traces.py)."""
    kind = traces.trace_kind(traces.header(path))
    if kind is not None:
        return traces.read_trace(path, kind)
    try:
        with open(path, newline="") as f:
            rows = [(n, row) for n, row in _numbered(csv.reader(f)) if row and not row[0].startswith("#")]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise WorkloadError(path, [str(e)]) from e
    if not rows:
        raise WorkloadError(path, ["no header line"])
    columns = _columns(path, rows[0][1])
    parsed: list[tuple[float | datetime, JobSpec, float]] = []
    errors: list[str] = []
    seen: set[str] = set()
    extras: dict[str, tuple[int, str, str]] = {}  # job_id -> (line, array, depends_on)
    for line, row in rows[1:]:
        try:
            cells = dict(zip(columns, row, strict=True))
            parsed.append(_row(line, cells, seen))
            extras[parsed[-1][1].job_id] = (line, cells.get("array", ""), cells.get("depends_on", ""))
        except ValueError as e:
            reason = str(e) if str(e).startswith("line ") else \
                f"line {line}: has {len(row)} fields, the header has {len(columns)}"
            errors.append(reason)
    if errors:
        raise WorkloadError(path, errors)
    if not parsed:
        raise WorkloadError(path, ["no jobs after the header"])
    jobs, errors = expand(_in_submit_order(path, parsed), extras)
    if errors:
        raise WorkloadError(path, errors)
    return jobs


def _numbered(reader: Any) -> Any:
    for row in reader:
        yield reader.line_num, [cell.strip() for cell in row]


def _columns(path: Path, header: list[str]) -> list[str]:
    columns = [c.lower() for c in header]
    missing = [c for c in REQUIRED if c not in columns]
    unknown = [c for c in columns if c not in REQUIRED + OPTIONAL]
    twice = sorted({c for c in columns if columns.count(c) > 1})
    problems = [f"header: missing column {c!r}" for c in missing]
    problems += [f"header: unknown column {c!r} (known: {', '.join(REQUIRED + OPTIONAL)})" for c in unknown]
    problems += [f"header: column {c!r} appears twice" for c in twice]
    if problems:
        raise WorkloadError(path, problems)
    return columns


def _row(line: int, cells: dict[str, str], seen: set[str]) -> tuple[float | datetime, JobSpec, float]:
    def fail(column: str, why: str) -> ValueError:
        return ValueError(f"line {line}: {column} {why}, got {cells.get(column, '')!r}")

    job_id = cells.get("job_id") or f"line-{line}"
    if not JOB_ID.fullmatch(job_id):
        raise fail("job_id", "must be 1-128 of A-Z a-z 0-9 . _ -")
    if job_id in seen:
        raise fail("job_id", "repeats an earlier line's")
    submit = _submit(cells["submit"])
    if submit is None:
        raise fail("submit", "must be seconds (a number >= 0) or an ISO 8601 time")
    duration = _number(cells["duration_s"], float)
    if duration is None or not math.isfinite(duration):
        raise fail("duration_s", "must be a number of seconds >= 0")
    ints = {"gpus": _number(cells["gpus"], int),
            "gpu_memory_mb": _number(cells.get("gpu_memory_mb") or "0", int)}
    for column, value in ints.items():
        if value is None:
            raise fail(column, "must be a whole number >= 0")
    nodes = _number(cells.get("nodes") or "1", int, low=1)
    if nodes is None or nodes > MAX_NODES:
        raise fail("nodes", f"must be a whole number from 1 to {MAX_NODES}")
    if nodes > 1 and cells.get("array"):
        raise fail("nodes", "must be 1 in an array row (a gang job cannot be a job array)")
    priority = _number(cells.get("priority") or "0", int, low=-1000)
    if priority is None or priority > 1000:
        raise fail("priority", "must be a whole number from -1000 to 1000")
    try:
        selector = parse_labels((cells.get("node_selector") or "").replace(";", ","), setting="node_selector")
    except ConfigError as e:
        raise fail("node_selector", "must be key=value pairs split by ';'") from e
    timeout = _number(cells["timeout_s"], int, low=1) if cells.get("timeout_s") else 0
    if timeout is None:
        raise fail("timeout_s", "must be a whole number of seconds >= 1")
    owner = {column: cells.get(column) or "default" for column in ("account", "user")}
    for column, name in owner.items():
        if not JOB_ID.fullmatch(name):
            raise fail(column, "must be 1-128 of A-Z a-z 0-9 . _ -")
    seen.add(job_id)
    spec = JobSpec(job_id=job_id, cmd=CMD, gpus=ints["gpus"] or 0, gpu_memory_mb=ints["gpu_memory_mb"] or 0,
                   gpu_model=cells.get("gpu_model", ""), node_selector=selector, priority=priority,
                   account=owner["account"], user=owner["user"], timeout_s=timeout or None, nodes=nodes)
    # The supervisor kills a job at its timeout: it holds its GPUs no longer than that.
    return submit[0], spec, min(duration, timeout) if timeout else duration


def _submit(text: str) -> tuple[float | datetime] | None:
    number = _number(text, float)
    if number is not None:
        return (number,) if math.isfinite(number) else None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (at if at.tzinfo else at.replace(tzinfo=UTC),)


def _number(text: str, kind: type, *, low: float = 0) -> Any:
    try:
        value = kind(text)
    except ValueError:
        return None
    return value if value >= low else None


def _in_submit_order(path: Path, parsed: list[tuple[float | datetime, JobSpec, float]]) -> list[SimJob]:
    kinds = {isinstance(submit, datetime) for submit, _, _ in parsed}
    if len(kinds) > 1:
        raise WorkloadError(path, ["submit mixes seconds and ISO 8601 times; use one of them"])
    first = min(submit for submit, _, _ in parsed)  # type: ignore[type-var]

    def seconds(submit: float | datetime) -> float:
        if isinstance(submit, datetime) and isinstance(first, datetime):
            return (submit - first).total_seconds()
        return float(submit)  # type: ignore[arg-type]  # one kind only, checked above

    jobs = [SimJob(spec=spec, submit_s=seconds(submit), duration_s=duration)
            for submit, spec, duration in parsed]
    return sorted(jobs, key=lambda j: j.submit_s)  # stable: equal times keep file order


# -- running -------------------------------------------------------------------------------------

def run_policy(config: RunConfig, policy: str) -> dict[str, Any]:
    """Simulate ``config`` under ``policy``: the figures, timed, as a JSON-ready dict."""
    nodes = traces.read_fleet(config.fleet) if config.fleet is not None else \
        synthetic_fleet(config.nodes, config.gpus_per_node, seed=config.seed)
    total = sum(len(n.gpus) for n in nodes)
    sharing = read_shares(config.shares) if config.shares is not None else None
    accounts = list(dict.fromkeys([*sharing.shares, *sharing.quotas])) if sharing else []
    if config.workload is not None:
        jobs: Any = read_workload(config.workload)
        span = jobs[-1].submit_s - jobs[0].submit_s
    else:
        jobs = synthetic_jobs(config.jobs, total_gpus=total, gpus_per_node=config.gpus_per_node,
                              load=config.load, seed=config.seed, accounts=accounts)
        span = config.jobs / arrival_rate(total_gpus=total, gpus_per_node=config.gpus_per_node,
                                          load=config.load)
    started = time.perf_counter()
    result = simulate(nodes, jobs, policy=get_policy(policy), starve_after_s=config.starve_after_s,
                      sample_every_s=span / SAMPLES, sharing=sharing, backfill=config.backfill)
    wall = time.perf_counter() - started
    return report(policy, result, wall_s=wall)


def report(policy: str, result: SimResult, *, wall_s: float) -> dict[str, Any]:
    figures = {k: v for k, v in asdict(result).items() if k != "samples"}
    samples = [[s.at_s, s.busy_gpus / result.total_gpus, s.queued] for s in result.samples]
    return {"policy": policy, **figures, "wall_s": wall_s,
            "decisions_per_s": result.decisions / wall_s if wall_s > 0 else 0.0,
            "samples": {"columns": ["at_s", "utilization", "queued"], "rows": samples}}


def run_all(config: RunConfig, policies: Sequence[str], *, processes: int = 1) -> list[dict[str, Any]]:
    """Each policy's report, in ``policies`` order, running up to ``processes`` at once."""
    if config.workload is not None:
        read_workload(config.workload)  # a bad file fails here, once, not in every worker
    if config.fleet is not None:
        traces.read_fleet(config.fleet)
    if config.shares is not None:
        read_shares(config.shares)
    if processes <= 1 or len(policies) <= 1:
        return [run_policy(config, p) for p in policies]
    with ProcessPoolExecutor(max_workers=min(processes, len(policies))) as pool:
        futures = [pool.submit(run_policy, config, p) for p in policies]
        return [f.result() for f in futures]


def default_processes(policies: int) -> int:
    return max(1, min(policies, os.cpu_count() or 1))


# -- output --------------------------------------------------------------------------------------

COLUMNS = (
    ("policy", "{}", "policy"),
    ("util", "{:.1%}", "utilization"),
    ("wait p50", None, "wait_p50_s"),
    ("wait p95", None, "wait_p95_s"),
    ("wait p99", None, "wait_p99_s"),
    ("frag", "{:.1%}", "fragmentation"),
    ("queue avg", "{:,.0f}", "mean_queue"),
    ("queue max", "{:,}", "max_queue"),
    ("starved", "{:,}", "starved"),
    ("unplaced", "{:,}", "never_placed"),
    ("decisions/s", "{:,.0f}", "decisions_per_s"),
    ("wall", "{:.1f}s", "wall_s"),
)


def table(reports: Sequence[dict[str, Any]]) -> str:
    """The reports as an aligned plain-text table, one row per policy."""
    rows = [[name for name, _, _ in COLUMNS]]
    for r in reports:
        rows.append([duration(r[key]) if fmt is None else fmt.format(r[key]) for _, fmt, key in COLUMNS])
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                       enumerate(zip(row, widths, strict=True))) for row in rows]
    return "\n".join(lines)


def duration(seconds: float) -> str:
    """``seconds`` in the largest unit that keeps it readable: 0s, 42s, 12.5m, 3.2h, 2.1d."""
    if seconds >= 1.5 * 86400:
        return f"{seconds / 86400:.1f}d"
    if seconds >= 1.5 * 3600:
        return f"{seconds / 3600:.1f}h"
    if seconds >= 100:
        return f"{seconds / 60:.1f}m"
    return f"{seconds:.0f}s"


def write_results(out: Path, config: RunConfig, reports: Sequence[dict[str, Any]]) -> tuple[Path, Path]:
    """Write ``out``/results.json and ``out``/chart.svg; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    results, chart = out / "results.json", out / "chart.svg"
    results.write_text(json.dumps({"config": settings, "policies": list(reports)}, indent=2) + "\n")
    chart.write_text(chart_svg(reports, title=describe(config)))
    return results, chart


def describe(config: RunConfig) -> str:
    fleet = f"{config.nodes:,} nodes × {config.gpus_per_node} GPUs"
    if config.fleet is not None:
        fleet = f"fleet {config.fleet.name}"
    if config.workload is not None:
        return f"{fleet}, workload {config.workload.name}"
    return f"{fleet}, {config.jobs:,} jobs at load {config.load:g}, seed {config.seed}"


# -- the chart -----------------------------------------------------------------------------------

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
# Policies often draw the same line (first-fit and best-fit do on the default mix): dashes
# keep the one underneath visible.
DASHES = ("", "7 5", "2 3", "9 3 2 3")
WIDTH, PANEL, LEFT, RIGHT, TOP, GAP = 900, 220, 70, 150, 50, 60


def chart_svg(reports: Sequence[dict[str, Any]], *, title: str) -> str:
    """An SVG of GPU utilization (top) and jobs waiting (bottom) over simulated time, a line
    per policy, over the window from the first submit to the last."""
    series = [(r["policy"], r["samples"]["rows"]) for r in reports]
    end = max((rows[-1][0] for _, rows in series if rows), default=0.0) or 1.0
    unit, size = ("h", 3600.0) if end >= 7200 else ("min", 60.0)
    most = _nice_ceiling(max((row[2] for _, rows in series for row in rows), default=0))
    height = TOP + 2 * PANEL + GAP + 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
             f'font-family="sans-serif" font-size="12">',
             f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
             f'<text x="{LEFT}" y="22" font-size="15">{escape(title)}</text>']
    panels = (("GPU utilization", 1, 1.0, lambda v: f"{v:.0%}"),
              ("jobs waiting", 2, most, lambda v: f"{v:,.0f}"))
    for i, (label, column, top_value, fmt) in enumerate(panels):
        y0 = TOP + i * (PANEL + GAP)
        parts += _axes(y0, label, top_value, fmt, end / size, unit)
        for k, (name, rows) in enumerate(series):
            points = " ".join(f"{_x(row[0] / end):.1f},{_y(y0, row[column] / top_value):.1f}"
                              for row in rows)
            parts.append(f'<polyline fill="none" {_stroke(k, 1.5)} points="{points}">'
                         f'<title>{escape(name)}</title></polyline>')
    for k, (name, _) in enumerate(series):
        y = TOP + 10 + 18 * k
        parts.append(f'<line x1="{WIDTH - RIGHT + 15}" y1="{y}" x2="{WIDTH - RIGHT + 45}" y2="{y}" '
                     f'{_stroke(k, 2.5)}/>')
        parts.append(f'<text x="{WIDTH - RIGHT + 50}" y="{y + 4}">{escape(name)}</text>')
    return "\n".join([*parts, "</svg>"]) + "\n"


def _stroke(k: int, width: float) -> str:
    dash = DASHES[k % len(DASHES)]
    return (f'stroke="{COLOURS[k % len(COLOURS)]}" stroke-width="{width}"'
            + (f' stroke-dasharray="{dash}"' if dash else ""))


def _axes(y0: float, label: str, top_value: float, fmt: Any, span: float, unit: str) -> list[str]:
    right, bottom = WIDTH - RIGHT, y0 + PANEL
    out = [f'<rect x="{LEFT}" y="{y0}" width="{right - LEFT}" height="{PANEL}" fill="none" stroke="#888"/>',
           f'<text x="{LEFT}" y="{y0 - 6}" font-weight="bold">{escape(label)}</text>']
    for k in range(5):
        y = _y(y0, k / 4)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt(top_value * k / 4)}</text>')
    for k in range(6):
        x = _x(k / 5)
        out.append(f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">{span * k / 5:.1f}</text>')
    out.append(f'<text x="{right}" y="{bottom + 32}" text-anchor="end">simulated time ({unit})</text>')
    return out


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 4, 6, 8 × a power of ten at or above ``value`` (quarters stay round)."""
    if value <= 1:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 4, 6, 8, 10) if m * power >= value)


def _x(fraction: float) -> float:
    return LEFT + fraction * (WIDTH - RIGHT - LEFT)


def _y(y0: float, fraction: float) -> float:
    return y0 + PANEL * (1 - min(max(fraction, 0.0), 1.0))
