"""The floor overlay is measured against: a plain Celery task that runs `true` in a subprocess.

Same Redis, same JSON serializer, same threads pool as an overlay agent; no database,
no placement. Started by bench/run.py as ``celery -A bench.floor worker -Q floor``.
"""

from __future__ import annotations

import os
import subprocess

from celery import Celery

# The worker is told FLOOR_REDIS_URL; the client (bench/run.py) shares make bench's BENCH_REDIS_URL.
BROKER = os.environ.get("FLOOR_REDIS_URL") or os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")

app = Celery("floor", broker=BROKER, backend=BROKER)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    task_default_queue="floor",
    worker_prefetch_multiplier=1,
    task_acks_late=True,
    worker_hijack_root_logger=False,
)


@app.task(name="floor.run_true")
def run_true() -> int:
    return subprocess.run(["true"], check=False).returncode
