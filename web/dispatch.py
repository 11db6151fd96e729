"""Sends the scheduler its wake-up message. Postgres is always written first."""

from __future__ import annotations

import logging

from celery import Celery

from workers.queues import CANCEL_TASK, PassRequests, assign_queue, request_pass

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
        self.passes = PassRequests(broker_url, timeout_s=1)

    def schedule(self) -> bool:
        """Ask the scheduler for a pass; False (and a warning) if the broker is down."""
        try:
            request_pass(self.celery, self.passes, retry=False)
            return True
        except Exception as e:
            log.warning("could not reach the broker to schedule (%s); reconcile will", e)
            return False

    def cancel(self, node: str, job_id: str, attempt: int) -> bool:
        """Tell ``node``'s agent to kill the attempt now; False (and a warning) if the broker
        is down (the agent's heartbeat check kills it anyway, a few seconds later)."""
        try:
            self.celery.send_task(CANCEL_TASK, args=[job_id, attempt], queue=assign_queue(node),
                                  retry=False)
            return True
        except Exception as e:
            log.warning("could not send the cancel of %s to %s (%s); its agent's check will", job_id, node, e)
            return False
