"""One scheduling pass asked for at a time: a flag in Redis next to the broker's queues.

Every submit and every job end wants a pass. Under load that was thousands of
``overlay.schedule`` messages, each a full pass (and Celery's events for it) that found
the work already done. Instead a requester sets the flag with ``SET NX`` and sends the
message only if it set it; the scheduler clears the flag as a pass *begins*, before it
reads the queue. So a request that finds the flag set is answered by a pass that has
not begun yet and will read everything the requester committed.

The flag expires after ``TTL_S`` so that a message lost with its flag still set (the
scheduler died holding it unacknowledged) delays passes by at most that long; reconcile's
pass every tick covers the rest. Kept free of Celery so the API can use it.
"""

from __future__ import annotations

import logging

import redis

log = logging.getLogger(__name__)
FLAG = "overlay:pass-requested"
TTL_S = 5


class PassRequests:
    """``want()`` before sending a pass request, ``begin()`` as a pass begins."""

    def __init__(self, redis_url: str, *, timeout_s: float | None = None) -> None:
        self.client = redis.Redis.from_url(redis_url, socket_timeout=timeout_s,
                                           socket_connect_timeout=timeout_s)

    def want(self) -> bool:
        """True if the caller must send the message: no pass was waiting to begin, or
        Redis did not answer (then the send meets the broker's own retries and errors)."""
        try:
            return bool(self.client.set(FLAG, b"1", nx=True, ex=TTL_S))
        except redis.RedisError:
            return True

    def begin(self) -> None:
        """A pass begins: requests from now on need a message of their own.

        Never raises: a pass must run with Redis away (its placements are in Postgres,
        and reconcile sends their run_job later); a flag left set expires in TTL_S.
        """
        try:
            self.client.delete(FLAG)
        except redis.RedisError as e:
            log.warning("could not clear the pass-request flag (%s); it expires within %ss", e, TTL_S)
