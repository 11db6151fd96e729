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

import redis

FLAG = "overlay:pass-requested"
TTL_S = 5


class PassRequests:
    """``want()`` before sending a pass request, ``begin()`` as a pass begins."""

    def __init__(self, redis_url: str, *, timeout_s: float | None = None) -> None:
        self.client = redis.Redis.from_url(redis_url, socket_timeout=timeout_s,
                                           socket_connect_timeout=timeout_s)

    def want(self) -> bool:
        """True if the caller must send the message: no pass was waiting to begin.

        Raises redis.RedisError when Redis does not answer (nor would the broker).
        """
        return bool(self.client.set(FLAG, b"1", nx=True, ex=TTL_S))

    def begin(self) -> None:
        """A pass begins: requests from now on need a message of their own."""
        self.client.delete(FLAG)
