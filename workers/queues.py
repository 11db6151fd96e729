"""The message protocol's names, and the one way to ask for a scheduling pass.

Users check these names with redis-cli: ``lrange jobs:queue 0 -1`` is work waiting
for the scheduler, ``lrange assign:node-a 0 -1`` work placed on node-a. The API and
the workers both import this module (the API never imports the task code), so the
protocol is written once.

A pass request is coalesced: every submit and every job end wants a pass, and under
load that was thousands of ``overlay.schedule`` messages, each a full pass that
found the work already done. A requester sets a flag in Redis with ``SET NX`` and
sends the message only if it set it; the scheduler clears the flag as a pass
*begins*, before it reads the queue. So a request that finds the flag set is
answered by a pass that has not begun yet and will read everything the requester
committed. The flag expires after ``FLAG_TTL_S`` so that a message lost with its flag
still set (the scheduler died holding it unacknowledged) delays passes by at most
that long; reconcile's pass every tick covers the rest.
"""

from __future__ import annotations

import logging
from typing import Protocol

import redis
from kombu import Exchange
from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)

SCHEDULER_QUEUE = "jobs:queue"
# Every agent gets each heartbeat request through this fanout exchange.
HEARTBEAT_QUEUE = "overlay.heartbeat"
HEARTBEAT_EXCHANGE = Exchange(HEARTBEAT_QUEUE, type="fanout")
# An agent's own queue, one per node.
ASSIGN_PREFIX = "assign:"

SCHEDULE_TASK = "overlay.schedule"
RECONCILE_TASK = "overlay.reconcile"
HEARTBEAT_TASK = "overlay.heartbeat"
RUN_JOB_TASK = "overlay.run_job"
# A cancel goes to the job's node on its own queue (the API sends it after the commit);
# the agent's heartbeat check confirms it, so a lost message only delays the kill.
CANCEL_TASK = "overlay.cancel"
# A preemption goes the same way (the scheduler sends it after its pass commits).
PREEMPT_TASK = "overlay.preempt"

PASS_FLAG = "overlay:pass-requested"
FLAG_TTL_S = 5


def assign_queue(node: str) -> str:
    """The queue of ``node``'s agent: ``assign:<node>``."""
    return f"{ASSIGN_PREFIX}{node}"


class TaskSender(Protocol):
    """What sends a task by name: a Celery app (the workers' or the API's publisher)."""

    def send_task(self, name: str, *args: object, **kwargs: object) -> object: ...


class PassRequests:
    """``want()`` before sending a pass request, ``begin()`` as a pass begins."""

    def __init__(self, redis_url: str, *, timeout_s: float | None = None) -> None:
        self.client = redis.Redis.from_url(redis_url, socket_timeout=timeout_s,
                                           socket_connect_timeout=timeout_s)

    def want(self) -> bool:
        """True if the caller must send the message: no pass was waiting to begin, or
        Redis did not answer (then the send meets the broker's own retries and errors)."""
        try:
            return bool(self.client.set(PASS_FLAG, b"1", nx=True, ex=FLAG_TTL_S))
        except redis.RedisError:
            return True

    def begin(self) -> None:
        """A pass begins: requests from now on need a message of their own.

        Never raises: a pass must run with Redis away (its placements are in Postgres,
        and reconcile sends their run_job later); a flag left set expires in FLAG_TTL_S.
        """
        try:
            self.client.delete(PASS_FLAG)
        except redis.RedisError as e:
            log.warning("could not clear the pass-request flag (%s); it expires within %ss", e, FLAG_TTL_S)


def request_pass(sender: TaskSender, passes: PassRequests, **options: object) -> bool:
    """Ask the scheduler for a pass, unless one that has not begun yet will see this
    commit; whether a message was sent. ``options`` go to ``send_task`` (``retry``).

    Raises what the broker raises when the message cannot be sent.
    """
    if not passes.want():
        return False
    sender.send_task(SCHEDULE_TASK, queue=SCHEDULER_QUEUE, **options)
    return True


class Channel(kombu_redis.Channel):
    """kombu's Redis channel, with one redis-py client for its synchronous commands.

    kombu builds a new ``redis.Redis`` for each publish, ack and fanout delivery
    (``conn_or_acquire``): about 60 µs each here, most of it redis-py copying its table of
    response callbacks, which py-spy put at 7% of the scheduler's CPU (docs/performance.md).
    A client holds no connection of its own: it takes one from the channel's pool for each
    command, so one serves every thread. A new pool (after a fork or a lost connection)
    gets a new client.
    """

    _sync_client: redis.Redis | None = None

    def _create_client(self, asynchronous: bool = False) -> redis.Redis:
        if asynchronous:  # the BRPOP poller's client: kombu keeps it itself (``client``)
            return super()._create_client(asynchronous=True)
        pool = self.pool
        client = self._sync_client
        if client is None or client.connection_pool is not pool:
            client = self._sync_client = super()._create_client()
        return client


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with ``Channel``; ``broker_transport`` in celeryconfig.py."""

    Channel = Channel
