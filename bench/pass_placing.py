"""A pass that places the one job a GPU's end let in, as the turnover run makes them: this
checkout against another, alternating in one run.

Two nodes with 4 and 2 fake GPUs, all taken, and a queue deeper than the fleet
(``--queued`` one-GPU jobs waiting). Each round ends one running job (an agent's end,
untimed), then times one pass (``schedule_pass`` with the scheduler's copy of the queue),
which places one job, then starts it (untimed): per pass, the CPU of this process (the
scheduler's Python) and the wall time (with Postgres's), medians over ``--passes``
passes after 20 to warm.

``--against DIR`` is another checkout (``git worktree add /tmp/old <commit>``); each of
``--pairs`` pairs runs both, in alternating order, each in a fresh interpreter on its own
tree and database. Without it, this checkout alone.

    python -m bench.pass_placing --passes 200 --against /tmp/old --pairs 3

Keeps its result as bench/results/pass-placing-<UTC time>-<commit>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from tests.conftest import PG_SERVER

WARM = 20


def measure(passes: int, queued: int) -> dict[str, float]:
    """Run in the tree under test (its store, its scheduler)."""
    import time
    import uuid

    from sqlalchemy import create_engine

    from overlay.config import Settings
    from overlay.gpus.fake import FakeProbe
    from overlay.model import JobSpec
    from overlay.states import JobState
    from overlay.store import gangs, moves
    from overlay.store import jobs as job_store
    from overlay.store import nodes as node_store
    from overlay.store.holds import QueuedJobs
    from overlay.store.session import ensure_database, make_sessionmaker, migrate
    from tests.conftest import drop_database
    from workers.scheduler import schedule_pass

    database_url = f"{PG_SERVER}/overlay_bench_{uuid.uuid4().hex[:8]}"
    ensure_database(database_url)
    migrate(database_url)
    engine = create_engine(database_url)
    sessions = make_sessionmaker(engine)
    settings = Settings.from_env({"DATABASE_URL": database_url})
    cpu, wall = [], []
    try:
        for name, gpus in (("node-a", 4), ("node-b", 2)):
            probe = FakeProbe(node_name=name, fake_gpus=f"{gpus}xNVIDIA A100-SXM4-80GB:81920")
            with sessions.begin() as s:
                node_store.record_heartbeat(s, name=name, hostname=name, report=probe.sample(), now=None,
                                            labels={}, agent_health={"job_slots": None})
        with sessions.begin() as s:
            for i in range(6 + WARM + passes + queued):
                job_store.insert_job(s, JobSpec(job_id=f"turn-{i:06d}", cmd=("true",), gpus=1), now=None)
        cache = QueuedJobs()
        running = list(schedule_pass(sessions, settings, queue=cache).runs)

        def start(m: Any) -> None:
            with sessions.begin() as s:
                gangs.start(s, m.job_id, attempt=m.attempt, part=0, node=m.node, now=None)

        for m in running:
            start(m)
        for i in range(WARM + passes):
            m = running.pop(0)
            with sessions.begin() as s:
                moves.finish(s, m.job_id, attempt=m.attempt, target=JobState.DONE, now=None, reason=None,
                             ending=job_store.Ending(exit_code=0, log_tail=""))
            c0, w0 = time.process_time(), time.perf_counter()
            result = schedule_pass(sessions, settings, queue=cache)
            if i >= WARM:
                cpu.append((time.process_time() - c0) * 1000)
                wall.append((time.perf_counter() - w0) * 1000)
            [placed] = result.runs
            start(placed)
            running.append(placed)
    finally:
        engine.dispose()
        drop_database(database_url)
    return {"cpu_ms_p50": statistics.median(cpu), "wall_ms_p50": statistics.median(wall)}


def main() -> None:
    # (here, not at the top: an older checkout runs this file's measure with its own bench.run)
    from bench.run import RESULTS, against_pairs, keep, machine

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passes", type=int, default=200)
    parser.add_argument("--queued", type=int, default=120, help="jobs still waiting after the last pass")
    parser.add_argument("--against", type=Path, help="another checkout to compare with")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result: dict[str, Any] = {"machine": machine(), "passes": args.passes, "queued": args.queued,
                              **against_pairs(Path(__file__), (args.passes, args.queued), args.against,
                                              args.pairs)}
    print(json.dumps({k: v for k, v in result.items() if k not in ("runs", "machine")}, indent=1))
    print(f"kept {keep(result, args.out, 'pass-placing')}")


if __name__ == "__main__":
    main()
