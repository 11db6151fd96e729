"""How overlay's workers hold their Redis connection: they survive a restarted Redis while tasks run.

When Redis goes away, Celery drops the broken connection and opens a new one. The
messages of the tasks running at that moment (acks_late) still belong to the old
channel, which has let go of its connection: kombu's Redis QoS then fails to ack
them when they finish, or to re-queue them as the channel closes, with an
AttributeError rather than a connection error. Celery takes that for an
"Unrecoverable error" and stops the worker, so every agent that was running a job
would leave its node whenever Redis restarts (seen with celery 5.7 / kombu 5.7;
tests/integration/test_faults.py restarts a real redis-server under running jobs).

There is nothing left to ack or re-queue on a dead channel: the Redis that held
those messages is gone (or will hand them out again after the visibility timeout,
and a redelivered task does nothing: Postgres says which job runs where, and
reconcile re-sends the run_job of a job still PLACED). So those three operations
become no-ops on a channel without a connection, and the worker carries on.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)
GUARDED = ("ack", "reject", "restore_unacked")


def survive_broker_restarts() -> None:
    """Make kombu's Redis QoS skip acks, rejects and restores on a dead channel (idempotent)."""
    for name in GUARDED:
        method = getattr(kombu_redis.QoS, name)
        if not getattr(method, "_overlay_guarded", False):
            setattr(kombu_redis.QoS, name, _skip_when_dead(method))


def channel_is_dead(qos: Any) -> bool:
    transport = getattr(qos.channel, "connection", None)
    return transport is None or getattr(transport, "client", None) is None


def _skip_when_dead(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        if channel_is_dead(self):
            log.info("broker connection is gone: skipping %s %s", method.__name__, args[:1])
            return None
        return method(self, *args, **kwargs)

    guarded._overlay_guarded = True  # type: ignore[attr-defined]
    return guarded
