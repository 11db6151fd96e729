"""Celery's own settings for overlay (broker URL and beat timings come from overlay.config)."""

from kombu import Exchange, Queue
from kombu.common import Broadcast

from workers.queues import (
    HEARTBEAT_EXCHANGE,
    HEARTBEAT_QUEUE,
    HEARTBEAT_TASK,
    RECONCILE_TASK,
    SCHEDULE_TASK,
    SCHEDULER_QUEUE,
)

# JSON only: messages carry ids, never pickled objects.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]

# A job's lease and state live in Postgres; the broker may redeliver (celery#5935)
# and every task is written so that a second delivery does nothing harmful.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
task_ignore_result = True

# Flower needs the agents' task events (received, started, succeeded: it shows a task from
# its first event on). No "task-sent" event: it was a second Redis publish for every
# message the scheduler sends, for a state Flower shows for the moment a job waits in its
# queue (docs/performance.md, "Round two").
worker_send_task_events = True
task_send_sent_event = False

task_default_queue = SCHEDULER_QUEUE
# Every agent gets each heartbeat request. A publisher must declare this fanout
# exchange itself (Celery does not for Broadcast queues, and kombu's Redis transport
# takes an undeclared exchange for "direct"): see the beat schedule in workers/app.py.
task_queues = (
    Queue(SCHEDULER_QUEUE, Exchange(SCHEDULER_QUEUE), routing_key=SCHEDULER_QUEUE),
    Broadcast(HEARTBEAT_QUEUE, exchange=HEARTBEAT_EXCHANGE),
)
task_routes = {
    SCHEDULE_TASK: {"queue": SCHEDULER_QUEUE},
    RECONCILE_TASK: {"queue": SCHEDULER_QUEUE},
    # The queue alone: naming the exchange here would make Celery declare it "direct".
    HEARTBEAT_TASK: {"queue": HEARTBEAT_QUEUE},
}
task_create_missing_queues = True

broker_connection_retry_on_startup = True
# kombu's Redis transport, less a redis-py client built for every command (workers/queues.py).
broker_transport = "workers.queues:Transport"
broker_transport_options = {"visibility_timeout": 3600}
worker_hijack_root_logger = False
