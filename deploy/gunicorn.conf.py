"""gunicorn settings for the overlay API: bootstrap storage once, in the master."""

import os

from overlay.config import Settings
from overlay.logfmt import dict_config

_settings = Settings.from_env(os.environ)

bind = os.environ.get("API_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("API_WORKERS", "2"))
# A long-poll (GET /api/jobs/<id>?wait=) holds a thread until its job ends: API_THREADS
# (320) per worker, of which API_RESERVED_THREADS (16) are never given to a waiter, so
# hundreds of waiting clients leave submits their threads; one waiter more than the rest
# gets 429 with Retry-After (web/waiter.py). An idle thread costs a stack, no CPU.
threads = _settings.api_threads
worker_class = "gthread"
# Clients (the CLI, scripts, long-polls) come straight here, often with keep-alive pools:
# gunicorn's 2 s default closes an idle connection just as a client reuses it, and the
# client sees "connection reset". Idle connections wait in the poller, not in a thread.
keepalive = int(os.environ.get("API_KEEPALIVE_S", "30"))
accesslog = "-"
timeout = 60
# The API's, gunicorn's and the access log's lines all go to the root logger, as LOG_FORMAT says;
# the access log only at LOG_LEVEL=DEBUG (overlay/logfmt.py, DEBUG_ONLY).
_level = _settings.log_level.upper() or "INFO"
_config = dict_config(_settings.log_format, _level)
logconfig_dict = {
    **_config,
    "loggers": {
        **_config["loggers"],
        "gunicorn.error": {"level": _level, "handlers": [], "propagate": True},
        "gunicorn.access": {**_config["loggers"]["gunicorn.access"], "handlers": [], "propagate": True},
    },
}


def on_starting(server):
    from web.auth import warn_if_open
    from web.bootstrap import bootstrap_storage

    warn_if_open(_settings)
    bootstrap_storage(_settings)
