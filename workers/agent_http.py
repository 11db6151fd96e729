"""The agent's own HTTP endpoints on AGENT_PORT: /health and Prometheus /metrics."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from workers.gpu_metrics import CONTENT_TYPE_LATEST as CONTENT_TYPE
from workers.gpu_metrics import render_metrics
from workers.runtime import Runtime

log = logging.getLogger(__name__)
StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("agent http: " + format, *args)


def health(rt: Runtime) -> tuple[int, dict[str, Any]]:
    """200 while the last heartbeat went through, 503 once one failed (or none yet)."""
    agent = rt.agent
    age = None if agent.last_heartbeat_at is None else round(time.time() - agent.last_heartbeat_at, 3)
    ok = agent.last_heartbeat_at is not None and agent.last_heartbeat_error is None
    body = {
        "node": rt.settings.node_name,
        "ok": ok,
        "metrics_mode": rt.probe.mode,
        "last_heartbeat_age_s": age,
        "last_heartbeat_error": agent.last_heartbeat_error,
        "running_jobs": sorted(set(agent.busy_now().values())),
    }
    return (200 if ok else 503), body


def make_wsgi(rt: Runtime) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/health":
            status, body = health(rt)
            payload, ctype = json.dumps(body).encode(), "application/json"
        elif path == "/metrics":
            busy = rt.agent.busy_now()
            report = rt.probe.sample(busy)
            payload = render_metrics(report, hostname=rt.hostname, node=rt.settings.node_name, busy=busy)
            status, ctype = 200, CONTENT_TYPE
        else:
            status, payload, ctype = 404, b'{"message": "not found"}', "application/json"
        reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
        start_response(f"{status} {reason}", [("Content-Type", ctype)])
        return [payload]

    return app


def serve_in_background(rt: Runtime, *, host: str = "0.0.0.0") -> WSGIServer:
    """Start the agent's HTTP server on a daemon thread; raises OSError if the port is taken."""
    server = make_server(host, rt.settings.agent_port, make_wsgi(rt),
                         server_class=_ThreadingServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="agent-http", daemon=True).start()
    log.info("agent %s serving /health and /metrics on :%s", rt.settings.node_name, rt.settings.agent_port)
    return server
