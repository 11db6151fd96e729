"""Worker start-up hooks: logging as LOG_FORMAT says; an agent registers as soon as it is ready."""

from __future__ import annotations

import logging
import logging.config
from typing import TYPE_CHECKING, Any

from celery.signals import setup_logging, worker_init, worker_ready

from overlay.errors import GpuProbeError
from overlay.logfmt import dict_config
from workers import agent_http, heartbeat
from workers.queues import request_pass

if TYPE_CHECKING:
    from workers.app import OverlayCelery

log = logging.getLogger(__name__)


def connect(app: OverlayCelery) -> None:
    """Connect the hooks of ``app``'s processes (called once, where the app is made)."""

    def on_init(sender: Any = None, **_: Any) -> None:
        open_probe(app, getattr(sender, "concurrency", None))

    def on_ready(sender: Any = None, **_: Any) -> None:
        agent_ready(app)

    def on_setup_logging(loglevel: int | str | None = None, **_: Any) -> None:
        configure_logging(app, loglevel)

    worker_init.connect(on_init, weak=False)
    worker_ready.connect(on_ready, weak=False)
    setup_logging.connect(on_setup_logging, weak=False)


def open_probe(app: OverlayCelery, concurrency: object) -> None:
    """Open the agent's GPU probe and kill what a dead predecessor left running, before
    the worker consumes anything.

    Real GPU mode without NVML stops the agent here with one clear line.
    """
    rt = app.runtime
    if not rt.is_agent:
        return
    rt.agent.job_slots = heartbeat.job_slots(concurrency)
    try:
        rt.probe  # noqa: B018 - opening the probe is the check
    except GpuProbeError as e:
        raise SystemExit(f"overlay agent {rt.settings.node_name}: {e.message}") from e
    heartbeat.kill_leftovers(rt)


def agent_ready(app: OverlayCelery) -> None:
    """Register the node at once (not at the first beat) and serve /health and /metrics."""
    rt = app.runtime
    if not rt.is_agent:
        return
    agent_http.serve_in_background(rt)
    beat = heartbeat.beat(rt)
    if beat.requeued:
        request_pass(app, rt.pass_requests)
    log.info("node %s registered: %d GPU(s), metrics %s", rt.settings.node_name,
             len(beat.report.gpus), beat.report.mode)


def configure_logging(app: OverlayCelery, loglevel: int | str | None) -> None:
    """Every Celery process (workers, beat) logs as LOG_FORMAT says, to stderr.

    Connecting to setup_logging replaces Celery's own logging setup. LOG_LEVEL, when
    set, wins over the command line's --loglevel.
    """
    settings = app.settings
    logging.config.dictConfig(dict_config(settings.log_format, settings.log_level or loglevel or "INFO"))
