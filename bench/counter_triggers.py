"""Bulk insert cost of the job counters' triggers: per row (migration 0004) against per
statement (migration 0009), side by side in one run.

    python -m bench.counter_triggers [--tasks 10000] [--repeats 5]

Two scratch databases on the local Postgres, one migrated to 0008 (a PL/pgSQL call and a
delta row per inserted job and per event) and one to head (one delta row per state per
INSERT statement). Each repeat stores one array of ``--tasks`` tasks in each, alternating
which goes first, with ``overlay/store/arrays.py`` ``insert_array`` in one transaction, as
``POST /api/jobs`` with ``array`` does (no HTTP: this isolates the database's part). Prints
the medians, their ratio and tasks per second; checks the counters of both agree with the
rows; writes bench/results/counter_triggers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from overlay.arrays import parse_array
from overlay.model import JobSpec
from overlay.store import arrays as array_store
from overlay.store.session import ensure_database, make_engine, make_sessionmaker, migrate

RESULTS = Path(__file__).resolve().parent / "results" / "counter_triggers.json"
PG_SERVER = os.environ.get("PG_SERVER", "postgresql+psycopg2://postgres@127.0.0.1:5432")
SCHEMAS = {"per_row": "0008", "per_statement": "head"}
COUNTED = text("SELECT sum(n) FROM (SELECT name, n FROM job_counters UNION ALL "
               "SELECT name, n FROM job_counter_deltas) c WHERE name = 'jobs:QUEUED'")


def measure(tasks: int, repeats: int) -> dict[str, Any]:
    urls = {name: f"{PG_SERVER}/overlay_trig_{name}_{uuid.uuid4().hex[:6]}" for name in SCHEMAS}
    engines = {}
    try:
        for name, revision in SCHEMAS.items():
            ensure_database(urls[name])
            migrate(urls[name], revision)
            engines[name] = make_engine(urls[name])
        sessions = {name: make_sessionmaker(engine) for name, engine in engines.items()}
        expression = f"0-{tasks - 1}"
        spec = parse_array(expression)
        seconds: dict[str, list[float]] = {name: [] for name in SCHEMAS}
        for k in range(repeats + 1):  # the first round warms both (cache, plans) and is dropped
            order = list(SCHEMAS) if k % 2 == 0 else list(reversed(SCHEMAS))
            for name in order:
                started = time.perf_counter()
                with sessions[name].begin() as s:
                    array_store.insert_array(s, JobSpec(job_id=f"a{k}", cmd=("true",), gpus=1), spec,
                                             expression=expression)
                if k:
                    seconds[name].append(time.perf_counter() - started)
        for name in SCHEMAS:
            with sessions[name]() as s:
                assert s.scalar(COUNTED) == tasks * (repeats + 1), f"{name}: counters disagree with the rows"
    finally:
        for engine in engines.values():
            engine.dispose()
        admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for url in urls.values():
                conn.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
        admin.dispose()
    medians = {name: statistics.median(xs) for name, xs in seconds.items()}
    return {
        "tasks_per_array": tasks, "repeats": repeats, "cores": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        **{f"{name}_seconds": [round(x, 3) for x in xs] for name, xs in seconds.items()},
        **{f"{name}_median_s": round(m, 3) for name, m in medians.items()},
        **{f"{name}_tasks_per_s": round(tasks / m) for name, m in medians.items()},
        "per_row_over_per_statement": round(medians["per_row"] / medians["per_statement"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    result = measure(args.tasks, args.repeats)
    for name in SCHEMAS:
        print(f"{name:>13}: median {result[f'{name}_median_s']:.3f} s for {args.tasks:,} tasks "
              f"({result[f'{name}_tasks_per_s']:,} tasks/s) {result[f'{name}_seconds']}")
    print(f"per row / per statement: {result['per_row_over_per_statement']}x "
          f"(load average {result['load_average']}, {result['cores']} cores)")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
