"""The one Celery app; its beat schedule comes from overlay's settings."""

from __future__ import annotations

import os
from functools import cached_property

from celery import Celery

from celeryconfig import HEARTBEAT_EXCHANGE
from overlay.config import Settings
from workers.broker import survive_broker_restarts
from workers.runtime import Runtime


class OverlayCelery(Celery):
    """Celery with overlay's runtime (settings, database, GPU probe) built lazily per process."""

    @cached_property
    def runtime(self) -> Runtime:
        return Runtime(Settings.from_env(os.environ))


def create_celery(settings: Settings) -> OverlayCelery:
    survive_broker_restarts()
    celery = OverlayCelery("overlay", broker=settings.broker_url, include=["workers.tasks"])
    celery.config_from_object("celeryconfig")
    celery.conf.beat_schedule = {
        "heartbeat": {
            "task": "overlay.heartbeat",
            "schedule": settings.heartbeat_interval_s,
            # A heartbeat nobody took in time is worthless: the next one is coming.
            "options": {"expires": settings.heartbeat_interval_s, "declare": [HEARTBEAT_EXCHANGE]},
        },
        "reconcile": {
            "task": "overlay.reconcile",
            "schedule": settings.reconcile_interval_s,
            "options": {"expires": settings.reconcile_interval_s * 2},
        },
    }
    return celery


app = create_celery(Settings.from_env(os.environ))

import workers.signals  # noqa: E402,F401  (connects the agent's startup hooks)
