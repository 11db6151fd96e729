"""Sends the scheduler its wake-up message. Postgres is always written first."""

from __future__ import annotations

import logging
import time

from celery import Celery

log = logging.getLogger(__name__)


class Dispatcher:
    """Publishes tasks by name, so the API needs the broker but not the worker code."""

    def __init__(self, broker_url: str) -> None:
        self.celery = Celery("overlay-api", broker=broker_url)
        self.celery.config_from_object("celeryconfig")
        # A down broker must fail a publish at once, not stall a request: the job is
        # already committed and the next reconcile schedules it.
        self.celery.conf.broker_transport_options = {
            **self.celery.conf.broker_transport_options,
            "socket_connect_timeout": 1,
            "socket_timeout": 1,
        }

    def schedule(self) -> bool:
        """Ask the scheduler for a pass; False (and a warning) if the broker is down."""
        try:
            # sent_at lets the scheduler skip a request a later pass has answered (workers/tasks.py)
            self.celery.send_task("overlay.schedule", kwargs={"sent_at": time.time()}, queue="jobs:queue",
                                  retry=False)
            return True
        except Exception as e:
            log.warning("could not reach the broker to schedule (%s); reconcile will", e)
            return False
