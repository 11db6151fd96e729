"""Worker start-up hooks: an agent registers as soon as it is ready and opens its port."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from celery.signals import worker_init, worker_ready

from overlay.errors import GpuProbeError

log = logging.getLogger(__name__)


@worker_init.connect
def open_probe(sender: Any = None, **_: Any) -> None:
    """Open the agent's GPU probe before the worker consumes anything.

    Real GPU mode without NVML stops the agent here with one clear line.
    """
    from workers.app import app

    rt = app.runtime
    if not rt.is_agent:
        return
    try:
        rt.probe  # noqa: B018 - opening the probe is the check
    except GpuProbeError as e:
        raise SystemExit(f"overlay agent {rt.settings.node_name}: {e.message}") from e


@worker_ready.connect
def agent_ready(sender: Any = None, **_: Any) -> None:
    """Register the node at once (not at the first beat) and serve /health and /metrics."""
    from workers import agent, agent_http
    from workers.app import app

    rt = app.runtime
    if not rt.is_agent:
        return
    agent_http.serve_in_background(rt)
    report = agent.heartbeat(rt, now=datetime.now(UTC))
    log.info("node %s registered: %d GPU(s), metrics %s", rt.settings.node_name,
             len(report.gpus), report.mode)
