"""``overlay report efficiency`` (like seff/jobstats), ``overlay list --idle``, and the idle
flags ``overlay status`` and ``overlay nodes`` show."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import click

from cli import render
from cli.client import Client

UNITS_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(text: str) -> int:
    """``7d`` -> 604800; raise click.BadParameter on anything else."""
    number, unit = text.rstrip("smhd"), text[len(text.rstrip("smhd")):]
    if not number.isdigit() or unit not in UNITS_S or int(number) < 1:
        raise click.BadParameter(f"{text!r} is not a duration like 7d, 12h or 3600")
    return int(number) * UNITS_S[unit]


def idle_for(job: Mapping[str, Any]) -> str:
    return render.duration(float(job.get("idle_seconds") or 0))


def efficiency_pairs(job: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``overlay status``'s efficiency line and, when marked, since when the job is idle."""
    eff = job.get("efficiency")
    pairs = [("gpu use", eff["line"])] if eff else []
    if job.get("idle_since") and job.get("state") == "RUNNING":
        for_how_long = render.since(job["idle_since"], datetime.now(UTC))
        pairs.append(("idle", f"GPUs idle since {job['idle_since']}  ({for_how_long})"))
    return pairs


def status_lines(job: Mapping[str, Any]) -> list[str]:
    """The lines ``overlay status`` adds after render.job_lines: GPU use and idleness."""
    return [f"{name:<9} {value}" for name, value in efficiency_pairs(job)]


def idle_rows(jobs: list[Mapping[str, Any]]) -> list[list[str]]:
    return [[j["job_id"], j["user"], j["account"], render.where(j), idle_for(j)] for j in jobs]


def list_idle(client: Client, as_json: bool) -> None:
    """``overlay list --idle``: the running jobs whose GPUs are all idle, longest first."""
    data = client.get_json("/api/efficiency/idle")
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    rows = idle_rows(data["jobs"])
    click.echo("\n".join(render.table(["JOB", "USER", "ACCOUNT", "WHERE", "IDLE FOR"], rows)))
    click.echo(f"({len(rows)} idle jobs)", err=True)


def flag_idle_gpus(client: Client, nodes: dict[str, Any]) -> dict[str, Any]:
    """``overlay nodes``: a GPU held by an idle job shows ``JOB (idle 2h05m)``."""
    idle = {j["job_id"]: j for j in client.get_json("/api/efficiency/idle")["jobs"]}
    for node in nodes.get("nodes", []):
        for gpu in node.get("gpus") or []:
            job = idle.get(gpu.get("job_id") or "")
            if job is not None:
                gpu["job_id"] = f"{job['job_id']} (IDLE {idle_for(job)})"
    return nodes


def report_lines(data: Mapping[str, Any]) -> list[str]:
    """The report as tables: one line per user or account, then the jobs that asked too much."""
    by = data["by"].upper()
    rows = [[g["group"], str(g["jobs"]), f"{g['gpu_hours']:.2f}", f"{g['idle_gpu_hours']:.2f}",
             f"{g['util_mean_pct']:.0f}%", f"{g['energy_kwh']:.2f}"] for g in data["groups"]]
    lines = [f"GPU efficiency since {data['since']}", ""]
    lines += render.table([by, "JOBS", "GPU-HOURS", "IDLE GPU-HOURS", "MEAN UTIL", "kWh"], rows) if rows \
        else ["(no sampled jobs)"]
    over = data.get("over_asked") or []
    if over:
        lines += ["", "Jobs that asked for far more GPU memory than they used:", ""]
        lines += render.table(
            ["JOB", "USER", "ACCOUNT", "ASKED (GiB)", "PEAK (GiB)", "SUGGESTED gpu_memory_mb"],
            [[o["job_id"], o["user"], o["account"], render.gib(o["gpu_memory_mb"]),
              render.gib(o["memory_peak_mb"]), str(o["suggested_mb"])] for o in over])
    return lines


@click.group()
def report() -> None:
    """Reports on how the GPUs were used."""


@report.command()
@click.option("--user", help="Only this user's jobs.")
@click.option("--account", help="Only this account's jobs.")
@click.option("--since", "since", default="7d", show_default=True,
              help="Jobs sampled within: 7d, 12h, 3600.")
@click.option("--by", type=click.Choice(["user", "account"]), default=None,
              help="Group by (default: account when --account is given, else user).")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON, for scripts.")
@click.pass_obj
def efficiency(client: Client, user: str | None, account: str | None, since: str, by: str | None,
               as_json: bool) -> None:
    """Per user or account: GPU-hours, idle GPU-hours, mean utilization; jobs to ask less memory."""
    params: dict[str, Any] = {"since_s": seconds(since), "by": by or ("account" if account else "user")}
    params |= {k: v for k, v in (("user", user), ("account", account)) if v}
    data = client.get_json("/api/efficiency/report", **params)
    click.echo(json.dumps(data, indent=2, sort_keys=True) if as_json else "\n".join(report_lines(data)))
