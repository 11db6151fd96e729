"""What the agent's GPU sampler costs Postgres: one round (read the node's running jobs,
fold every GPU's reading, one upsert) on a node of N GPUs each held by a running job.

    python -m bench.sampling_cost [--gpus 8] [--rounds 200]

Creates a scratch database on the local Postgres (dropped at the end), registers one node
with fake GPUs, starts one running 1-GPU job per GPU, and runs the real Sampler round by
round with a stepping clock. Prints the median and p95 wall time of a round, the SQL
statements and transactions per round (counted with SQLAlchemy's events), and writes
bench/results/sampling_cost.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path

from sqlalchemy import event

RESULTS = Path(__file__).resolve().parent / "results" / "sampling_cost.json"


def main() -> int:
    from overlay.config import Settings
    from overlay.gpus.fake import FakeProbe
    from overlay.model import JobSpec, Placement
    from overlay.store import gangs
    from overlay.store import jobs as job_store
    from overlay.store import nodes as node_store
    from overlay.store.session import ensure_database, make_engine, make_sessionmaker, migrate
    from tests.conftest import PG_SERVER, drop_database
    from workers.runtime import Runtime
    from workers.sampling import Sampler

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    url = f"{PG_SERVER}/overlay_sampling_{uuid.uuid4().hex[:8]}"
    ensure_database(url)
    engine = make_engine(url)
    try:
        migrate(url)
        sessions = make_sessionmaker(engine)
        t0 = datetime.now(UTC)
        probe = FakeProbe(node_name="node-a", fake_gpus=f"{args.gpus}xNVIDIA A100-SXM4-80GB:81920",
                          clock=lambda: 0.0)
        with sessions.begin() as s:
            node_store.record_heartbeat(s, name="node-a", hostname="a", labels={}, agent_health={},
                                        report=probe.sample(), now=t0)
        rt = Runtime(replace(Settings(), node_name="node-a", database_url=url))
        rt.sessions, rt.probe = sessions, probe  # type: ignore[misc]
        for i in range(args.gpus):
            with sessions.begin() as s:
                job_store.insert_job(s, JobSpec(job_id=f"j{i}", cmd=("x",), gpus=1), now=t0)
                job = job_store.place(s, f"j{i}", Placement(node="node-a", gpus=(i,)), now=t0)
                gangs.start(s, f"j{i}", attempt=job.attempt, part=0, node="node-a", now=t0)
            rt.agent.hold(f"j{i}", (i,))
        statements = count()
        event.listen(engine, "before_cursor_execute", lambda *a, **k: next(statements))
        ticks = count(0, 5)
        sampler = Sampler(rt, clock=lambda: float(next(ticks)))
        times: list[float] = []
        before = next(statements)
        for r in range(args.rounds):
            began = time.perf_counter()
            sampler.round(now=t0 + timedelta(seconds=5 * r))
            times.append((time.perf_counter() - began) * 1000)
        per_round = (next(statements) - before - 1) / args.rounds
    finally:
        engine.dispose()
        drop_database(url)
    times.sort()
    figures = {"gpus": args.gpus, "rounds": args.rounds, "round_ms_p50": round(statistics.median(times), 2),
               "round_ms_p95": round(times[int(0.95 * len(times)) - 1], 2),
               "statements_per_round": round(per_round, 1), "transactions_per_round": 2}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
