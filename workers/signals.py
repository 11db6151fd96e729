"""Worker start-up hooks: logging as LOG_FORMAT says; an agent registers as soon as it is ready."""

from __future__ import annotations

import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

from celery.signals import setup_logging, worker_init, worker_ready

from overlay.errors import GpuProbeError
from overlay.logfmt import dict_config

log = logging.getLogger(__name__)


@worker_init.connect
def open_probe(sender: Any = None, **_: Any) -> None:
    """Open the agent's GPU probe and kill what a dead predecessor left running, before
    the worker consumes anything.

    Real GPU mode without NVML stops the agent here with one clear line.
    """
    from workers.app import app

    rt = app.runtime
    if not rt.is_agent:
        return
    from workers import agent

    rt.agent.job_slots = agent.job_slots(getattr(sender, "concurrency", None))
    try:
        rt.probe  # noqa: B018 - opening the probe is the check
    except GpuProbeError as e:
        raise SystemExit(f"overlay agent {rt.settings.node_name}: {e.message}") from e
    agent.kill_leftovers(rt)


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


@setup_logging.connect
def configure_logging(loglevel: int | str | None = None, **_: Any) -> None:
    """Every Celery process (workers, beat) logs as LOG_FORMAT says, to stderr.

    Connecting here replaces Celery's own logging setup. LOG_LEVEL, when set, wins
    over the command line's --loglevel.
    """
    from workers.app import app

    settings = app.runtime.settings
    logging.config.dictConfig(dict_config(settings.log_format, settings.log_level or loglevel or "INFO"))
