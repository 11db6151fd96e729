"""Turning domain values into the API's JSON shapes."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from overlay.model import Job, NodeInfo
from web.schemas import REDACTED


def job_view(job: Job) -> dict[str, Any]:
    spec = job.spec
    return {
        "job_id": job.job_id,
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
        },
    }


def node_view(info: NodeInfo, *, now: datetime) -> dict[str, Any]:
    snap = info.snapshot
    return {
        "name": snap.name,
        "hostname": info.hostname,
        "state": snap.state.value,
        "labels": dict(snap.labels),
        "gpus": [{**asdict(g), "job_id": info.holders.get(g.index)} for g in snap.gpus],
        "agent_health": dict(info.agent_health),
        "last_seen": info.last_seen,
        "last_seen_age_s": round((now - info.last_seen).total_seconds(), 3),
    }
