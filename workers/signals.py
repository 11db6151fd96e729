"""Worker start-up hooks: logging as LOG_FORMAT says; an agent registers as soon as it is ready."""

from __future__ import annotations

import logging
import logging.config
from typing import Any, Protocol

from celery.signals import setup_logging, worker_init, worker_ready, worker_shutting_down

from overlay.config import Settings
from overlay.errors import ConfigError, GpuProbeError
from overlay.logfmt import dict_config
from overlay.store import agents as agent_store
from workers import agent_http, execution, heartbeat, sampling, supervision
from workers.queues import TaskSender, request_pass
from workers.runtime import Runtime


class OverlayCelery(TaskSender, Protocol):
    """What the hooks need of the app that connects them (workers/app.py): its settings,
    its runtime, and sending a task. A protocol, so this module needs no import of the app."""

    settings: Settings

    @property
    def runtime(self) -> Runtime: ...

log = logging.getLogger(__name__)


def connect(app: OverlayCelery) -> None:
    """Connect the hooks of ``app``'s processes (called once, where the app is made)."""

    def on_init(sender: Any = None, **_: Any) -> None:
        open_probe(app, getattr(sender, "concurrency", None))

    def on_ready(sender: Any = None, **_: Any) -> None:
        agent_ready(app)

    def on_setup_logging(loglevel: int | str | None = None, **_: Any) -> None:
        configure_logging(app, loglevel)

    def on_shutting_down(**_: Any) -> None:
        agent_stopping(app)

    worker_init.connect(on_init, weak=False)
    worker_shutting_down.connect(on_shutting_down, weak=False)
    worker_ready.connect(on_ready, weak=False)
    setup_logging.connect(on_setup_logging, weak=False)


def open_probe(app: OverlayCelery, concurrency: object) -> None:
    """Open the agent's GPU probe, check FENCE_S, and re-attach to the supervisors a
    previous agent process of this node started, before the worker consumes anything.

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
    s = rt.settings
    if s.fence_s >= s.node_ttl_s:
        raise SystemExit(f"overlay agent {s.node_name}: FENCE_S={s.fence_s:g} must be below "
                         f"NODE_TTL_S={s.node_ttl_s:g}, or a cut-off node's jobs could still run "
                         "when the control plane gives them to another node")
    rt.agent.containment = supervision.containment()
    try:
        rt.agent.gpu_isolation = supervision.choose_gpu_isolation(s.gpu_isolation)
    except ConfigError as e:
        raise SystemExit(f"overlay agent {s.node_name}: {e.message}") from e
    # The attempts a previous agent process started go on; their ends are reported here.
    rt.agent.reattached = supervision.reattach(rt, execution.report_found)


def agent_ready(app: OverlayCelery) -> None:
    """Register the node at once (not at the first beat) and serve /health and /metrics."""
    rt = app.runtime
    if not rt.is_agent:
        return
    agent_http.serve_in_background(rt)
    supervision.keep_leases(rt)
    sampling.start(rt)  # GPU efficiency and idle jobs, every GPU_SAMPLE_S
    supervision.say_reattached(rt, rt.agent.reattached)
    beat = heartbeat.beat(rt)
    if beat.requeued:
        request_pass(app, rt.pass_requests)
    log.info("node %s registered: %d GPU(s), metrics %s", rt.settings.node_name,
             len(beat.report.gpus), beat.report.mode)


def agent_stopping(app: OverlayCelery) -> None:
    """SIGTERM (Celery's warm shutdown): take no more work, show the node as stopping, and
    let go of the running attempts (their supervisors go on; the next agent process
    re-attaches to them). Their leases run out FENCE_S after this process is gone."""
    rt = app.runtime
    if not rt.is_agent:
        return
    rt.agent.stopping = True
    try:
        with rt.sessions.begin() as s:
            agent_store.mark_stopping(s, rt.settings.node_name)
    except Exception as e:
        log.warning("could not mark node %s stopping: %s", rt.settings.node_name, e)
    log.info("agent of node %s stopping: %d attempt(s) go on under their supervisors",
             rt.settings.node_name, len(rt.agent.supervised_now()))


def configure_logging(app: OverlayCelery, loglevel: int | str | None) -> None:
    """Every Celery process (workers, beat) logs as LOG_FORMAT says, to stderr.

    Connecting to setup_logging replaces Celery's own logging setup. LOG_LEVEL, when
    set, wins over the command line's --loglevel.
    """
    settings = app.settings
    logging.config.dictConfig(dict_config(settings.log_format, settings.log_level or loglevel or "INFO"))
