"""The scheduler's run_job messages, as an agent finds them in Redis.

A pass sends its messages in pipelined batches (workers/tasks.py ``send_run_jobs``, kombu's
``Producer.batch``); these tests read what reached each node's queue on a real Redis and
hold it to what a publish of its own writes: same wire format, every message, in order."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import redis

from tests.integration.harness import ROOT

SEND = """
import sys
from workers import tasks
from workers.scheduler import RunJobMessage
count = int(sys.argv[1])
tasks.send_run_jobs([RunJobMessage(job_id=f"j{i}", attempt=1 + i % 2, node=f"n{i % 3}") for i in range(count)]
                    + [RunJobMessage(job_id="gang", attempt=2, node="n1", part=1)])
# one message the way every message went before batches: its own publish
tasks.run_job.apply_async(("one", 1), queue="assign:single", argsrepr="job_id='one', attempt=1")
"""


FAILING_BATCH = """
import logging, sys
from kombu.exceptions import BatchPublishError
from kombu.transport import redis as transport
from workers import tasks
from workers.scheduler import RunJobMessage
logging.basicConfig(level=logging.WARNING)
flush = transport.PublishBatch.flush
def fail_first(self):  # Redis gone for the moment the batch is written
    transport.PublishBatch.flush = flush
    raise BatchPublishError("connection lost")
transport.PublishBatch.flush = fail_first
count = int(sys.argv[1])
tasks.send_run_jobs([RunJobMessage(job_id=f"j{i}", attempt=1, node=f"n{i % 3}") for i in range(count)])
"""


def queued(client: redis.Redis, queue: str) -> list[dict]:
    """The messages waiting in ``queue``, oldest first (kombu pushes on the left)."""
    return [json.loads(raw) for raw in reversed(client.lrange(queue, 0, -1))]


def body(message: dict) -> list:
    assert message["properties"]["body_encoding"] == "base64"
    return json.loads(base64.b64decode(message["body"]))


def test_a_pass_sends_every_run_job_to_its_node_in_order_as_send_task_would(redis_url):
    # Given more messages than one pipelined batch holds (kombu flushes every 1,000)
    count = 2_500
    env = {"REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", SEND, str(count)], cwd=ROOT, env=env, check=True, timeout=60)
    client = redis.Redis.from_url(redis_url)
    try:
        # Then each node's queue holds its messages, every one, in the order sent
        by_node = {n: queued(client, f"assign:n{n}") for n in range(3)}
        assert sum(len(m) for m in by_node.values()) == count + 1
        for n, messages in by_node.items():
            expected = [[f"j{i}", 1 + i % 2] for i in range(n, count, 3)]
            expected += [["gang", 2, 1]] if n == 1 else []
            assert [body(m)[0] for m in messages] == expected
            assert {m["headers"]["task"] for m in messages} == {"overlay.run_job"}
            assert {m["properties"]["delivery_info"]["routing_key"] for m in messages} == {f"assign:n{n}"}
        # And Flower's task list reads which job and attempt from each
        assert by_node[1][-1]["headers"]["argsrepr"] == "job_id='gang', attempt=2, part=1"
        assert by_node[0][0]["headers"]["argsrepr"] == "job_id='j0', attempt=1"
        # And a batched message is what a publish of its own writes, field for field
        [single] = queued(client, "assign:single")
        batched = by_node[0][0]
        assert batched.keys() == single.keys()
        assert batched["headers"].keys() == single["headers"].keys()
        assert batched["properties"].keys() == single["properties"].keys()
        assert batched["properties"]["delivery_mode"] == single["properties"]["delivery_mode"] == 2
    finally:
        client.close()


def test_a_batch_that_fails_to_be_written_is_sent_again_one_by_one(redis_url):
    # Given Redis failing the moment the pass's batch is written
    env = {"REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"}
    sent = subprocess.run([sys.executable, "-c", FAILING_BATCH, "1500"], cwd=ROOT, env=env, timeout=60,
                          capture_output=True, text=True)
    # Then the send still succeeds, saying what happened, and every message is there once, in order
    assert sent.returncode == 0, sent.stderr
    assert "sending 1500 message(s) in one batch failed (BatchPublishError: connection lost): " \
           "sending them one by one" in sent.stderr
    client = redis.Redis.from_url(redis_url)
    try:
        for n in range(3):
            assert [body(m)[0] for m in queued(client, f"assign:n{n}")] == \
                [[f"j{i}", 1] for i in range(n, 1500, 3)]
    finally:
        client.close()


def test_every_process_publishes_through_one_redis_client_per_channel(redis_url):
    from kombu import Connection

    from web.dispatch import Dispatcher
    from workers.queues import Channel, assign_queue

    # Given the API's publisher (its app reads celeryconfig.py, as the workers' does)
    dispatcher = Dispatcher(redis_url)
    client = redis.Redis.from_url(redis_url)
    client.delete(assign_queue("n-transport"))
    with dispatcher.celery.connection_for_write() as conn:
        channel = conn.default_channel
        assert isinstance(channel, Channel)
        # When it publishes twice (and Redis takes both)
        first = channel._create_client()
        for node in ("n-transport", "n-transport"):
            assert dispatcher.cancel(node, "j", 1)
        # Then the channel built one client for its commands, on its own pool
        assert channel._create_client() is first and first.connection_pool is channel.pool
        assert client.llen(assign_queue("n-transport")) == 2
        # and a pool made again (after a fork, or a lost connection) gets a client of its own
        channel._disconnect_pools()
        again = channel._create_client()
        assert again is not first and again.connection_pool is channel.pool and again.ping()
    # The URL's database and password reach the transport as they reach kombu's own
    url = redis_url.replace("redis://", "redis://:secret@")
    ours, theirs = Connection(url, transport="workers.queues:Transport"), Connection(url)
    keys = ("host", "port", "db", "password", "username", "socket_timeout")
    assert [ours.default_channel.pool.connection_kwargs.get(k) for k in keys] == \
        [theirs.default_channel.pool.connection_kwargs.get(k) for k in keys]
    assert ours.default_channel.pool.connection_kwargs["password"] == "secret"
    ours.release()
    theirs.release()
