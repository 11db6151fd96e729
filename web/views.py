"""Turning domain values into the API's JSON shapes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from datetime import datetime
from typing import Any

from overlay.fairshare import Priority
from overlay.model import Job, JobPart, NodeInfo
from web.schemas import REDACTED


def job_view(job: Job, *, priority: Priority | None = None) -> dict[str, Any]:
    spec = job.spec
    return {
        "job_id": job.job_id,
        "user": spec.user,
        "account": spec.account,
        "borrowed": job.borrowed,
        "preemptions": job.preemptions,
        "preempted_by": job.preempted_by,
        "priority": asdict(priority) if priority is not None else None,
        "state": job.state.value,
        "attempt": job.attempt,
        "node": job.node,
        "gpus": list(job.gpus),
        "exit_code": job.exit_code,
        "reason": job.reason,
        "timestamps": {
            "enqueued": job.enqueued_at,
            "placed": job.placed_at,
            "started": job.started_at,
            "finished": job.finished_at,
        },
        "array_id": spec.array_id,
        "array_index": spec.array_index,
        "nodes": spec.nodes,
        "master_addr": job.master_addr if spec.nodes > 1 else None,
        "master_port": job.master_port if spec.nodes > 1 else None,
        "request": {
            "cmd": list(spec.cmd),
            "image": spec.image,
            # Env values may hold secrets; they go to the job, never back out.
            "env": {k: REDACTED for k in spec.env},
            "gpus": spec.gpus,
            "gpu_memory_mb": spec.gpu_memory_mb,
            "gpu_model": spec.gpu_model,
            "node_selector": dict(spec.node_selector),
            "priority": spec.priority,
            "timeout_s": spec.timeout_s,
            "max_retries": spec.max_retries,
            "memory_mb": spec.memory_mb,
            "preemptible": spec.preemptible,
            "nodes": spec.nodes,
        },
    }


def part_view(part: JobPart) -> dict[str, Any]:
    return {"part": part.part, "node": part.node, "gpus": list(part.gpus), "state": part.state,
            "exit_code": part.exit_code, "reason": part.reason, "started": part.started_at,
            "finished": part.finished_at}


def node_view(info: NodeInfo, *, now: datetime,
              owners: Mapping[tuple[str, int], tuple[str, str]] | None = None) -> dict[str, Any]:
    """A node as the API shows it; ``owners``: (node, GPU index) -> (user, account) of the
    job holding it, shown to everyone (as squeue does: never the job's command or env)."""
    snap = info.snapshot
    owners = owners or {}
    none = (None, None)
    return {
        "name": snap.name,
        "hostname": info.hostname,
        "state": snap.state.value,
        "labels": dict(snap.labels),
        "gpus": [{**asdict(g), "job_id": info.holders.get(g.index),
                  **dict(zip(("user", "account"), owners.get((snap.name, g.index), none), strict=True))}
                 for g in snap.gpus],
        "agent_health": dict(info.agent_health),
        "last_seen": info.last_seen,
        "last_seen_age_s": round((now - info.last_seen).total_seconds(), 3),
    }
