"""Two per-job costs side by side, old way against new, alternating in one run:

- **device rules**: a supervisor's cgroup v1 set-up for a one-GPU attempt
  (``workers/cgroups.py`` ``open_group`` with the devices controller, then ``remove``):
  the ~250 ``devices.deny`` rules written with an ``open`` per rule (before 3e61dfb) and
  on one open file (now). Needs root and cgroup v1's devices controller; skipped without.
- **sends**: a pass's ``run_job`` messages to Redis (``workers/tasks.py``
  ``send_run_jobs``): one publish each with a ``task-sent`` event (before eb41d66), one
  publish each without the event, and pipelined batches without it (now).

    python -m bench.message_costs [--groups 200] [--messages 2000] [--repeats 5]

Prints medians per attempt and per message; writes bench/results/message-costs.json.
Uses Redis DB 10 (MESSAGE_BENCH_REDIS_URL moves it; not make bench's DB 13, so that the
two can run at once), emptied before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "message-costs.json"
REDIS_URL = os.environ.get("MESSAGE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")


def device_rules(groups: int) -> dict[str, Any]:
    """CPU (this process) per group made and removed, each way, in alternating blocks."""
    from workers import cgroups

    roots = cgroups.v1_roots()
    if "devices" not in roots or os.geteuid() != 0:
        return {"skipped": "needs root and a writable cgroup v1 devices controller"}
    limits = cgroups.Limits(gpus=(0,), device_dir="/dev")
    rules = len(cgroups.denied_devices(limits))

    def per_rule(path: Path, values: list[str]) -> None:  # the way before 3e61dfb
        for value in values:
            cgroups._write(path, value)

    ways: dict[str, Callable[[Path, list[str]], None]] = {"open per rule": per_rule,
                                                          "one open file": cgroups._write_each}
    cpu: dict[str, list[float]] = {w: [] for w in ways}
    original = cgroups._write_each
    try:
        for block in range(10):
            for way in ways if block % 2 == 0 else list(ways)[::-1]:
                cgroups._write_each = ways[way]  # type: ignore[assignment]
                for i in range(groups // 10):
                    began = time.process_time()
                    group = cgroups.open_group(f"bench-rules-{os.getpid()}-{block}-{i}.1", limits)
                    group.remove()
                    cpu[way].append(time.process_time() - began)
    finally:
        cgroups._write_each = original  # type: ignore[assignment]
    return {"rules_per_attempt": rules, "groups_each_way": groups,
            **{f"{way}_cpu_ms_p50": statistics.median(v) * 1000 for way, v in cpu.items()}}


def sends(messages: int, repeats: int) -> dict[str, Any]:
    """Wall time per message sent, each way, alternating, ``repeats`` rounds."""
    os.environ["REDIS_URL"] = REDIS_URL  # before workers.app makes the Celery app
    import redis

    from workers import scheduler, tasks
    from workers.app import app
    from workers.queues import assign_queue

    client = redis.Redis.from_url(REDIS_URL)
    batch = [scheduler.RunJobMessage(job_id=f"bench-{i}", attempt=1, node=f"node-{i % 100}")
             for i in range(messages)]

    def one_by_one() -> None:  # the way before eb41d66
        with app.producer_or_acquire() as producer:
            for m in batch:
                shown = f"job_id={m.job_id!r}, attempt={m.attempt}"
                tasks.run_job.apply_async((m.job_id, m.attempt), queue=assign_queue(m.node),
                                          producer=producer, argsrepr=shown)

    ways: dict[str, tuple[bool, Callable[[], None]]] = {
        "one publish each, with task-sent": (True, one_by_one),
        "one publish each, no task-sent": (False, one_by_one),
        "pipelined batches, no task-sent": (False, lambda: tasks.send_run_jobs(batch)),
    }
    wall: dict[str, list[float]] = {w: [] for w in ways}
    sent_event = app.conf.task_send_sent_event
    client.flushdb()
    try:
        for r in range(repeats):
            for way in ways if r % 2 == 0 else list(ways)[::-1]:
                app.conf.task_send_sent_event, send = ways[way]
                began = time.perf_counter()
                send()
                wall[way].append(time.perf_counter() - began)
                client.flushdb()
    finally:
        app.conf.task_send_sent_event = sent_event
        client.flushdb()
        client.close()
    return {"messages": messages, "repeats": repeats,
            **{f"{way}_ms_per_message": statistics.median(v) * 1000 / messages for way, v in wall.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, default=200, help="cgroups made each way")
    parser.add_argument("--messages", type=int, default=2000, help="run_job messages per send")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    from bench.run import machine

    results = {"machine": machine(), "device_rules": device_rules(args.groups),
               "sends": sends(args.messages, args.repeats)}
    print(json.dumps(results, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
