"""Plain-text rendering for the CLI: aligned tables, bars, durations, jobs and nodes.

Pure: dicts as the API returns them in, lines of text out.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

TERMINAL = frozenset({"DONE", "FAILED", "CANCELLED"})
STATES = ("QUEUED", "PLACED", "RUNNING", "DONE", "FAILED", "CANCELLED")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    return [
        "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    ]


def bar(fraction: float, width: int = 10, *, ascii_only: bool = False) -> str:
    """``[████░░░░░░]`` for 0.4; fraction is clamped to 0..1."""
    full, empty = ("#", ".") if ascii_only else ("█", "░")
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return f"[{full * filled}{empty * (width - filled)}]"


def duration(seconds: float) -> str:
    """``0.4s``, ``42s``, ``3m12s``, ``2h05m``, ``3d04h``."""
    if seconds < 10:
        return f"{max(seconds, 0):.1f}s"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def gib(mib: float) -> str:
    return f"{mib / 1024:.1f}"


def parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def since(text: str | None, now: datetime) -> str:
    when = parse_time(text)
    return duration((now - when).total_seconds()) if when else "-"


def outcome(job: Mapping[str, Any]) -> str:
    """``DONE (exit 0)``, ``FAILED (exit 3)``, ``RUNNING``."""
    code = job.get("exit_code")
    return f"{job['state']} (exit {code})" if code is not None else str(job["state"])


def where(job: Mapping[str, Any]) -> str:
    """``node-a GPUs 0,1`` (or ``-`` before placement)."""
    if not job.get("node"):
        return "-"
    gpus = ",".join(map(str, job.get("gpus") or []))
    return f"{job['node']} GPUs {gpus}" if gpus else str(job["node"])


def progress(job: Mapping[str, Any], elapsed: float) -> str:
    """One line per change while waiting: ``[  1.2s] hello RUNNING on node-a GPUs 0``."""
    state, reason = job["state"], job.get("reason")
    if state == "QUEUED":
        detail = f"{state} waiting: {reason}" if reason else state
    elif state in ("PLACED", "RUNNING"):
        detail = f"{state} on {where(job)}"
    else:
        # "exit code 3" says nothing "(exit 3)" does not
        said = reason and not reason.startswith("exit code")
        detail = outcome(job) + (f": {reason}" if said else "")
    return f"[{duration(elapsed):>6}] {job['job_id']} {detail}"


def wants(request: Mapping[str, Any]) -> str:
    """What a job asked for, in a few words."""
    parts = [f"{request.get('gpus', 0)} GPU(s)"]
    if (request.get("nodes") or 1) > 1:
        parts[0] += f" on each of {request['nodes']} nodes"
    if request.get("gpu_memory_mb"):
        parts.append(f">= {request['gpu_memory_mb']} MiB each")
    if request.get("gpu_model"):
        parts.append(f"model ~{request['gpu_model']}")
    parts += [f"{k}={v}" for k, v in (request.get("node_selector") or {}).items()]
    for key, label in (("priority", "priority"), ("timeout_s", "timeout"), ("max_retries", "retries")):
        if request.get(key):
            parts.append(f"{label} {request[key]}" + ("s" if key == "timeout_s" else ""))
    if request.get("preemptible") is False:
        parts.append("not preemptible")
    return ", ".join(parts)


def job_lines(job: Mapping[str, Any], now: datetime | None = None) -> list[str]:
    """``overlay status``: one field a line."""
    now = now or datetime.now(UTC)
    ts, request = job.get("timestamps") or {}, job.get("request") or {}
    pairs = [
        ("job", job["job_id"]), ("state", outcome(job)), ("reason", job.get("reason") or "-"),
        *([("owner", owner(job))] if job.get("user") else []),
        *([("priority", priority(job["priority"]))] if job.get("priority") else []),
        ("node", where(job)), ("attempt", attempts(job)),
        *[(name, _stamp(ts.get(name), now)) for name in ("enqueued", "placed", "started", "finished")],
        ("cmd", shlex.join(request.get("cmd") or [])), ("image", request.get("image") or "(host)"),
        ("wants", wants(request)),
        *([("meets at", f"{job['master_addr']}:{job['master_port']}")] if job.get("master_port") else []),
        *[(f"part {p['part']}", part_line(p)) for p in job.get("parts") or []],
    ]
    return [f"{name:<9} {value}" for name, value in pairs]


def attempts(job: Mapping[str, Any]) -> str:
    """``2``, or ``2 (1 preempted)``: preempted attempts do not use up max_retries."""
    n, preempted = job.get("attempt", 0), job.get("preemptions") or 0
    return f"{n} ({preempted} preempted)" if preempted else str(n)


def event_rows(events: Sequence[Mapping[str, Any]], now: datetime) -> list[list[str]]:
    """``overlay events``: when, the move (or ``note``), attempt, where, why."""
    rows = []
    for e in events:
        move = ("submitted" if e.get("from_state") is None else
                "note" if e["from_state"] == e["to_state"] else f"{e['from_state']} -> {e['to_state']}")
        place = f"{e['node']} GPUs {','.join(map(str, e['gpus']))}" if e.get("node") and e.get("gpus") else \
            (e.get("node") or "-")
        rows.append([_stamp(e["at"], now), move if move != "submitted" else "-> QUEUED", str(e["attempt"]),
                     place, e.get("reason") or "-"])
    return rows


def part_line(part: Mapping[str, Any]) -> str:
    """``node-b GPUs 0,1  FAILED (exit 3)``: where a gang job's part runs and how it ended."""
    gpus = ",".join(map(str, part.get("gpus") or [])) or "-"
    code = f" (exit {part['exit_code']})" if part.get("exit_code") is not None else ""
    return f"{part['node']} GPUs {gpus}  {part['state']}{code}"


def owner(job: Mapping[str, Any]) -> str:
    """``alice (vision)``, and ``, borrowed`` for a job placed beyond its account's quota."""
    return f"{job['user']} ({job.get('account', '-')}{', borrowed' if job.get('borrowed') else ''})"


def priority(p: Mapping[str, Any]) -> str:
    """A waiting job's multifactor priority and its weighted parts."""
    return (f"{p['value']:.0f} = own {p['priority']:.0f} + age {p['age']:.0f} + fair share "
            f"{p['fairshare']:.0f} + user {p['user']:.0f}")


def _stamp(text: str | None, now: datetime) -> str:
    return f"{text}  ({since(text, now)} ago)" if text else "-"


def job_rows(jobs: Sequence[Mapping[str, Any]], now: datetime) -> list[list[str]]:
    """``overlay list`` rows: id, state, where, age, and why it waits or how it ended."""
    rows = []
    for j in jobs:
        info = j.get("reason") or ("" if j.get("exit_code") is None else f"exit {j['exit_code']}")
        enqueued = (j.get("timestamps") or {}).get("enqueued")
        rows.append([j["job_id"], j["state"], where(j), since(enqueued, now), _clip(info, 70)])
    return rows


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def node_lines(node: Mapping[str, Any], *, ascii_only: bool = False) -> list[str]:
    """``overlay nodes``: a header line, then one row per GPU with utilization and memory bars."""
    gpus = node.get("gpus") or []
    labels = ",".join(f"{k}={v}" for k, v in sorted((node.get("labels") or {}).items())
                      if not k.startswith("gpu."))
    age = node.get("last_seen_age_s")
    head = (f"{node['name']}  {node.get('state', '?')}  {len(gpus)} GPU(s)  {labels or '-'}  "
            f"seen {duration(age) if age is not None else '?'} ago")
    rows = [gpu_row(g, ascii_only=ascii_only) for g in gpus]
    body = table(["GPU", "MODEL", "UTIL", "MEMORY (GiB)", "TEMP", "JOB"], rows) if rows else ["(no GPUs)"]
    return [head, *(f"  {line}" for line in body)]


def gpu_row(g: Mapping[str, Any], *, ascii_only: bool = False) -> list[str]:
    util = g.get("utilization_gpu_pct") or 0
    used, total = g.get("memory_used_mb") or 0, g.get("memory_total_mb") or 0
    temp = g.get("temperature_c")
    return [
        str(g["index"]),
        str(g.get("name", "")),
        f"{bar(util / 100, ascii_only=ascii_only)} {util:>3}%",
        f"{bar(used / total if total else 0, ascii_only=ascii_only)} {gib(used):>5}/{gib(total)}",
        f"{temp}C" if temp is not None else "-",
        g.get("job_id") or "-",
    ]
