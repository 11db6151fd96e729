"""The one Celery app; its beat schedule comes from overlay's settings."""

from __future__ import annotations

import os
from functools import cached_property
from typing import Any

from celery import Celery

from overlay.config import Settings
from workers import signals
from workers.broker import survive_broker_restarts
from workers.housekeeping import HOUSEKEEPING_INTERVAL_S, HOUSEKEEPING_TASK
from workers.queues import HEARTBEAT_EXCHANGE, HEARTBEAT_TASK, RECONCILE_TASK
from workers.runtime import Runtime


class OverlayCelery(Celery):
    """Celery with overlay's settings (read once per process) and its runtime
    (database, GPU probe), built lazily so that it is made after any fork."""

    def __init__(self, *args: Any, settings: Settings, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = settings

    @cached_property
    def runtime(self) -> Runtime:
        return Runtime(self.settings)


def create_celery(settings: Settings) -> OverlayCelery:
    survive_broker_restarts()
    celery = OverlayCelery("overlay", broker=settings.broker_url, include=["workers.tasks"],
                           settings=settings)
    celery.config_from_object("celeryconfig")
    celery.conf.beat_schedule = {
        "heartbeat": {
            "task": HEARTBEAT_TASK,
            "schedule": settings.heartbeat_interval_s,
            # No `expires`: Celery would stamp beat's clock on the message and an agent
            # whose clock runs ahead would drop every heartbeat as expired. An agent
            # skips the heartbeats that pile up instead (workers/heartbeat.py, due()).
            "options": {"declare": [HEARTBEAT_EXCHANGE]},
        },
        "reconcile": {
            "task": RECONCILE_TASK,
            "schedule": settings.reconcile_interval_s,
            "options": {"expires": settings.reconcile_interval_s * 2},
        },
        "housekeeping": {
            "task": HOUSEKEEPING_TASK,
            "schedule": HOUSEKEEPING_INTERVAL_S,
            "options": {"expires": HOUSEKEEPING_INTERVAL_S * 2},
        },
    }
    signals.connect(celery)
    return celery


app = create_celery(Settings.from_env(os.environ))
