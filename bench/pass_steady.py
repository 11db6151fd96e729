"""A pass over a deep queue behind a full fleet, as the turnover run makes them: through the
scheduler's copy of the queue (overlay/store/holds.py ``QueuedJobs``) against a whole read,
alternating in one run on one database.

Two nodes with 4 and 2 fake GPUs, all taken, and ``--queued`` one-GPU jobs waiting (the
turnover run's shape: every pass reads the whole queue and places nothing). Each block
of ``--passes`` passes runs one way, the next block the other, ``--blocks`` blocks each;
per pass, the CPU of this process (the scheduler's Python) and the wall time (with
Postgres's). Medians over all passes of each way.

    python -m bench.pass_steady --queued 120 --passes 20 --blocks 6

Keeps its result as bench/results/pass-steady-<UTC time>-<commit>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine

from bench.run import RESULTS, keep, machine
from overlay.config import Settings
from overlay.gpus.fake import FakeProbe
from overlay.model import JobSpec
from overlay.store import jobs as job_store
from overlay.store import nodes as node_store
from overlay.store.holds import QueuedJobs
from overlay.store.session import ensure_database, make_sessionmaker, migrate
from tests.conftest import PG_SERVER, drop_database
from workers.scheduler import schedule_pass

WAYS = ("cached", "whole")


def run(queued: int, passes: int, blocks: int) -> dict[str, Any]:
    database_url = f"{PG_SERVER}/overlay_bench_{uuid.uuid4().hex[:8]}"
    ensure_database(database_url)
    migrate(database_url)
    engine = create_engine(database_url)
    sessions = make_sessionmaker(engine)
    settings = Settings.from_env({"DATABASE_URL": database_url})
    cpu: dict[str, list[float]] = {w: [] for w in WAYS}
    wall: dict[str, list[float]] = {w: [] for w in WAYS}
    try:
        for name, gpus in (("node-a", 4), ("node-b", 2)):
            probe = FakeProbe(node_name=name, fake_gpus=f"{gpus}xNVIDIA A100-SXM4-80GB:81920")
            with sessions.begin() as s:
                node_store.record_heartbeat(s, name=name, hostname=name, report=probe.sample(), now=None,
                                            labels={}, agent_health={"job_slots": None})
        with sessions.begin() as s:
            for i in range(6 + queued):
                job_store.insert_job(s, JobSpec(job_id=f"steady-{i:06d}", cmd=("true",), gpus=1), now=None)
        first = schedule_pass(sessions, settings)  # takes the 6 GPUs; the rest waits
        assert len(first.runs) == 6, first
        cache = QueuedJobs()
        schedule_pass(sessions, settings, queue=cache)  # the cache's first read is a whole one
        for block in range(2 * blocks):
            way = WAYS[block % 2]
            for _ in range(passes):
                c0, w0 = time.process_time(), time.perf_counter()
                result = schedule_pass(sessions, settings, queue=cache if way == "cached" else None)
                cpu[way].append((time.process_time() - c0) * 1000)
                wall[way].append((time.perf_counter() - w0) * 1000)
                assert not result.runs, result
    finally:
        engine.dispose()
        drop_database(database_url)
    out: dict[str, Any] = {"queued": queued, "passes_each_way": passes * blocks}
    for way in WAYS:
        out[f"{way}_cpu_ms_p50"] = statistics.median(cpu[way])
        out[f"{way}_wall_ms_p50"] = statistics.median(wall[way])
    out["cpu_ratio"] = out["cached_cpu_ms_p50"] / out["whole_cpu_ms_p50"]
    out["wall_ratio"] = out["cached_wall_ms_p50"] / out["whole_wall_ms_p50"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queued", type=int, default=120)
    parser.add_argument("--passes", type=int, default=20)
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = {"machine": machine(), **run(args.queued, args.passes, args.blocks)}
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))
    print(f"kept {keep(result, args.out, 'pass-steady')}")


if __name__ == "__main__":
    main()
