"""``overlay simulate --from-history``: replay the cluster's own recorded jobs on its recorded
fleet under other policies, and print, side by side, what happened and what each policy
would have done."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cli import render
from cli.client import Client
from overlay.model import GpuDevice, JobSpec, NodeSnapshot
from overlay.policies import get_policy
from overlay.simulation import Sharing, SimEvent, percentile, simulate
from overlay.workload import CMD, SimJob


@dataclass(frozen=True, kw_only=True)
class History:
    """What the admin history stream held: the fleet, and the jobs that ran, in submit order."""

    since: str
    nodes: list[NodeSnapshot]
    jobs: list[SimJob]
    recorded: list[Mapping[str, Any]]


def parse(lines: Iterable[str | bytes]) -> History:
    """Read /api/admin/history's JSON lines."""
    since, nodes, recorded = "", [], []
    for raw in lines:
        if not raw.strip():
            continue
        item = json.loads(raw)
        if "since" in item:
            since = item["since"]
        elif "node" in item and item["node"]["gpus"]:
            nodes.append(to_node(item["node"]))
        elif "job" in item:
            recorded.append(item["job"])
    first = min((_t(j["enqueued"]) for j in recorded), default=None)
    jobs = [to_job(j, first) for j in recorded] if first is not None else []
    return History(since=since, nodes=nodes, jobs=jobs, recorded=recorded)


def fetch(client: Client, *, since_s: int) -> History:
    """Stream the history from the API (the admin token is needed when tokens are on)."""
    response = client.get("/api/admin/history", params={"since_s": since_s})
    return parse(response.text.splitlines())


def to_node(node: Mapping[str, Any]) -> NodeSnapshot:
    gpus = tuple(GpuDevice(index=g["index"], uuid=f"HIST-{node['name']}-{g['index']}", name=g["name"],
                           memory_total_mb=g["memory_total_mb"]) for g in node["gpus"])
    return NodeSnapshot(name=node["name"], gpus=gpus, labels=dict(node.get("labels") or {}),
                        slots=node.get("job_slots"))


def to_job(job: Mapping[str, Any], first: datetime) -> SimJob:
    spec = JobSpec(job_id=job["job_id"], cmd=CMD, gpus=job["gpus"], gpu_memory_mb=job["gpu_memory_mb"],
                   gpu_model=job["gpu_model"], node_selector=job["node_selector"], priority=job["priority"],
                   timeout_s=job["timeout_s"], user=job["user"], account=job["account"],
                   nodes=job.get("nodes") or 1)
    run = (_t(job["finished"]) - _t(job["started"])).total_seconds()
    return SimJob(spec=spec, submit_s=(_t(job["enqueued"]) - first).total_seconds(), duration_s=max(run, 0.0))


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass(kw_only=True)
class Figures:
    """One column of the comparison."""

    jobs: int = 0
    waits: list[float] = field(default_factory=list)
    utilization: float | None = None
    fragmentation: float | None = None
    gpu_hours: dict[str, float] = field(default_factory=dict)
    account_waits: dict[str, list[float]] = field(default_factory=dict)

    def add(self, account: str, wait_s: float, gpu_s: float) -> None:
        self.waits.append(wait_s)
        self.account_waits.setdefault(account, []).append(wait_s)
        self.gpu_hours[account] = self.gpu_hours.get(account, 0.0) + gpu_s / 3600


def recorded(history: History) -> Figures:
    """What happened: waits from submit to placement, GPUs held from placement to end,
    utilization over the window from the first submit to the last (as the simulator's)."""
    total = sum(len(n.gpus) for n in history.nodes)
    figures = Figures(jobs=len(history.recorded))
    if not history.recorded:
        return figures
    first = min(_t(j["enqueued"]) for j in history.recorded)
    window = (max(_t(j["enqueued"]) for j in history.recorded) - first).total_seconds()
    held = 0.0
    for j in history.recorded:
        placed = _t(j["placed"] or j["started"])
        end = _t(j["finished"])
        figures.add(j["account"], (placed - _t(j["enqueued"])).total_seconds(),
                    j["gpus"] * (end - placed).total_seconds())
        start_s, end_s = (placed - first).total_seconds(), (end - first).total_seconds()
        held += j["gpus"] * max(0.0, min(end_s, window) - max(start_s, 0.0))
    figures.utilization = held / (total * window) if total and window > 0 else None
    return figures


def replayed(history: History, policy: str, *, sharing: Sharing | None = None,
             starve_after_s: float = 3600.0) -> Figures:
    """What ``policy`` would have done with the same jobs on the same fleet."""
    figures = Figures(jobs=len(history.jobs))
    def observe(event: SimEvent) -> None:
        if event.kind == "start":
            job = event.job
            figures.add(job.spec.account, event.at_s - job.submit_s,
                        job.spec.gpus * job.spec.nodes * job.duration_s)

    result = simulate(history.nodes, history.jobs, policy=get_policy(policy), starve_after_s=starve_after_s,
                      observer=observe, sharing=sharing)
    figures.utilization, figures.fragmentation = result.utilization, result.fragmentation
    return figures


def comparison(columns: Mapping[str, Figures]) -> list[str]:
    """Side by side: one row per figure, one column per run (``recorded`` first)."""
    def waits(f: Figures, q: float) -> str:
        return render.duration(percentile(sorted(f.waits), q)) if f.waits else "-"

    def pct(x: float | None) -> str:
        return f"{x:.1%}" if x is not None else "-"

    rows = [["jobs", *(str(f.jobs) for f in columns.values())],
            ["placed", *(str(len(f.waits)) for f in columns.values())],
            *[[f"wait p{q}", *(waits(f, q) for f in columns.values())] for q in (50, 95, 99)],
            ["utilization", *(pct(f.utilization) for f in columns.values())],
            ["fragmentation", *(pct(f.fragmentation) for f in columns.values())]]
    accounts = sorted({a for f in columns.values() for a in f.gpu_hours})
    for account in accounts:
        rows.append([f"{account} GPU-h", *(f"{f.gpu_hours.get(account, 0.0):.2f}" for f in columns.values())])
        rows.append([f"{account} wait p50", *(
            render.duration(percentile(sorted(f.account_waits[account]), 50)) if f.account_waits.get(account)
            else "-" for f in columns.values())])
    return render.table(["", *columns], rows)


def run(history: History, policies: Sequence[str], *, sharing: Sharing | None = None) -> list[str]:
    """The whole report: the comparison, and what the columns mean."""
    if not history.jobs:
        return [f"no job ran to an end since {history.since}: nothing to replay"]
    if not history.nodes:
        return ["no node with GPUs is recorded: nothing to replay on"]
    columns = {"recorded": recorded(history)}
    columns |= {policy: replayed(history, policy, sharing=sharing) for policy in policies}
    gpus = sum(len(n.gpus) for n in history.nodes)
    return [f"{len(history.jobs)} jobs since {history.since} on {len(history.nodes)} nodes, {gpus} GPUs "
            "(their recorded run times, submit order, requests and accounts)", "",
            *comparison(columns), "",
            "recorded: what happened; the others: the same jobs replayed through the scheduler's placement "
            "and queue order. wait: submit to placement; utilization: share of GPUs held from the first "
            "submit to the last"]
