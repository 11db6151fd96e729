"""The cluster's recorded history for the simulator's ``--from-history``: the fleet as its
agents last reported it, and the jobs that ran, streamed in submit order."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from overlay.store.tables import GpuRow, JobRow, NodeRow

BATCH = 1000


def fleet(session: Session) -> list[dict[str, Any]]:
    """Every registered node with its GPUs (index, model name, memory) and labels."""
    gpus: dict[str, list[dict[str, Any]]] = {}
    for g in session.scalars(select(GpuRow).order_by(GpuRow.node, GpuRow.index)):
        gpus.setdefault(g.node, []).append({"index": g.index, "name": g.name,
                                            "memory_total_mb": g.memory_total_mb})
    return [{"name": n.name, "labels": dict(n.labels or {}), "state": n.state,
             "job_slots": (n.agent_health or {}).get("job_slots"), "gpus": gpus.get(n.name, [])}
            for n in session.scalars(select(NodeRow).order_by(NodeRow.name))]


def ran_since(session: Session, since: datetime) -> Iterator[dict[str, Any]]:
    """The jobs submitted since ``since`` that ran to an end (started and finished), oldest
    first, read BATCH rows at a time (a server-side cursor: the history is never held whole)."""
    query = (select(JobRow.job_id, JobRow.user_name, JobRow.account, JobRow.gpus, JobRow.gpu_memory_mb,
                    JobRow.gpu_model, JobRow.node_selector, JobRow.priority, JobRow.timeout_s, JobRow.state,
                    JobRow.node, JobRow.nodes, JobRow.enqueued_at, JobRow.placed_at, JobRow.started_at,
                    JobRow.finished_at)
             .where(JobRow.enqueued_at >= since, JobRow.started_at.is_not(None),
                    JobRow.finished_at.is_not(None))
             .order_by(JobRow.enqueued_at, JobRow.job_id)
             .execution_options(yield_per=BATCH))
    for r in session.execute(query):
        yield {"job_id": r.job_id, "user": r.user_name, "account": r.account, "gpus": r.gpus,
               "gpu_memory_mb": r.gpu_memory_mb, "gpu_model": r.gpu_model,
               "node_selector": dict(r.node_selector or {}), "priority": r.priority, "timeout_s": r.timeout_s,
               "state": r.state.value, "node": r.node, "nodes": r.nodes,
               **{k: getattr(r, f"{k}_at").isoformat() if getattr(r, f"{k}_at") else None
                  for k in ("enqueued", "placed", "started", "finished")}}
