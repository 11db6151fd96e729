"""An agent's store work per job, this checkout against another, alternating in one run.

Per job, an agent records its start (one transaction), its end (one transaction), and
reads what follows the end (one session): the store calls workers/execution.py makes.
This times those three, in-process on a database of their own (no Celery, no
supervisor), as CPU of the measuring process (SQLAlchemy, psycopg2: the agent's share)
and wall time (with Postgres's), per job, median over ``--jobs`` jobs after 20 to warm.

``--against DIR`` is another checkout (``git worktree add /tmp/old <commit>``); each of
``--pairs`` pairs runs both, in alternating order, each in a fresh interpreter with its
own tree on PYTHONPATH and its own schema (its own migrations), so a noisy machine
weighs on both alike. Without it, this checkout alone.

    python -m bench.agent_store --jobs 300 --against /tmp/old --pairs 3

Keeps its result as bench/results/agent-store-<UTC time>-<commit>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from tests.conftest import PG_SERVER

WARM = 20


def measure(jobs: int) -> dict[str, float]:
    """Run in the tree under test: insert and place each job (untimed), then time its
    start, end and after-end reads as an agent makes them."""
    from sqlalchemy import create_engine

    from overlay.gpus.fake import FakeProbe
    from overlay.model import JobSpec, Placement
    from overlay.states import JobState
    from overlay.store import gangs
    from overlay.store import jobs as job_store
    from overlay.store import nodes as node_store
    from overlay.store.session import ensure_database, make_sessionmaker, migrate
    from tests.conftest import drop_database

    try:  # this checkout: the end in Core (overlay/store/moves.py)
        from overlay.store.moves import finish
    except ImportError:  # before it: the ORM's
        finish = job_store.finish  # type: ignore[attr-defined]
    database_url = f"{PG_SERVER}/overlay_bench_{uuid.uuid4().hex[:8]}"
    ensure_database(database_url)
    migrate(database_url)
    engine = create_engine(database_url)
    sessions = make_sessionmaker(engine)
    cpu, wall = [], []
    try:
        probe = FakeProbe(node_name="node-a", fake_gpus="4xNVIDIA A100-SXM4-80GB:81920")
        with sessions.begin() as s:
            node_store.record_heartbeat(s, name="node-a", hostname="node-a", report=probe.sample(), now=None,
                                        labels={}, agent_health={"job_slots": None})
        for i in range(WARM + jobs):
            job_id = f"agent-store-{i}"
            with sessions.begin() as s:
                job_store.insert_job(s, JobSpec(job_id=job_id, cmd=("true",), gpus=1), now=None)
            with sessions.begin() as s:
                placed = job_store.place(s, job_id, Placement(node="node-a", gpus=(i % 4,)), now=None)
            c0, w0 = time.process_time(), time.perf_counter()
            with sessions.begin() as s:
                started = gangs.start(s, job_id, attempt=placed.attempt, part=0, node="node-a", now=None)
            with sessions.begin() as s:
                ended = finish(s, job_id, attempt=started.attempt, target=JobState.DONE, now=None,
                               reason=None,
                               ending=job_store.Ending(exit_code=0, log_tail="bye\n"))
            with sessions() as s:
                gangs.to_stop_after(s, job_id, attempt=started.attempt, part=0)
                job_store.any_queued(s)
            if i >= WARM:
                cpu.append((time.process_time() - c0) * 1000)
                wall.append((time.perf_counter() - w0) * 1000)
            assert ended.state is JobState.DONE, ended
    finally:
        engine.dispose()
        drop_database(database_url)
    return {"cpu_ms_p50": statistics.median(cpu), "wall_ms_p50": statistics.median(wall)}


def main() -> None:
    # (here, not at the top: an older checkout runs this file's measure with its own bench.run)
    from bench.run import RESULTS, against_pairs, keep, machine

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--against", type=Path, help="another checkout to compare with")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result: dict[str, Any] = {"machine": machine(), "jobs": args.jobs,
                              **against_pairs(Path(__file__), (args.jobs,), args.against, args.pairs)}
    print(json.dumps({k: v for k, v in result.items() if k not in ("runs", "machine")}, indent=1))
    print(f"kept {keep(result, args.out, 'agent-store')}")


if __name__ == "__main__":
    main()
