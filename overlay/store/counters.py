"""The job counters: folded from the deltas the triggers of migration 0004 append, read in one query.

Every job insert, state change and delete, and every job event, appends a row to
job_counter_deltas in the writer's own transaction, so the counts are exact and outlive
any process. ``compact`` folds those rows into job_counters (one compactor at a time);
``read`` adds what is not folded yet. A scrape costs the number of counter names plus
the deltas since the last fold, whatever the number of jobs and events.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

# pg_try_advisory_xact_lock key: two compactors would update the same counter rows in
# different orders and could deadlock; the second one skips instead.
COMPACT_LOCK = 0x6F766C_0004

COMPACT = text("""
WITH moved AS (DELETE FROM job_counter_deltas RETURNING name, n, total)
INSERT INTO job_counters (name, n, total)
SELECT name, sum(n), sum(total) FROM moved GROUP BY name
ON CONFLICT (name) DO UPDATE SET n = job_counters.n + EXCLUDED.n, total = job_counters.total + EXCLUDED.total
""")

# Fold and read in one statement (one round trip: a scrape's cost is mostly round trips).
# Every part of a statement sees the snapshot it began with, so the SELECT adds the
# counters and the deltas as they were before the fold: the same sums as after it.
FOLD_AND_READ = text("""
WITH lock AS (SELECT pg_try_advisory_xact_lock(:k) AS held),
moved AS (DELETE FROM job_counter_deltas WHERE (SELECT held FROM lock) RETURNING name, n, total),
folded AS (
  INSERT INTO job_counters (name, n, total) SELECT name, sum(n), sum(total) FROM moved GROUP BY name
  ON CONFLICT (name) DO UPDATE
  SET n = job_counters.n + EXCLUDED.n, total = job_counters.total + EXCLUDED.total
)
SELECT name, sum(n), sum(total) FROM (
  SELECT name, n, total FROM job_counters UNION ALL SELECT name, n, total FROM job_counter_deltas
) c GROUP BY name
""")

READ = text("""
SELECT name, sum(n), sum(total) FROM (
  SELECT name, n, total FROM job_counters UNION ALL SELECT name, n, total FROM job_counter_deltas
) c GROUP BY name
""")

# Counters from the rows themselves (as migration 0004 seeds them): the repair when rows
# were loaded with triggers off (bench/history.py does so on purpose).
REBUILD = """
DELETE FROM job_counter_deltas;
DELETE FROM job_counters;
INSERT INTO job_counters (name, n, total)
SELECT name, sum(n), sum(total) FROM (
  SELECT 'jobs:' || status AS name, count(*) AS n, 0::float8 AS total FROM jobs GROUP BY status
  UNION ALL SELECT 'entered:' || to_state, count(*), 0 FROM job_events GROUP BY to_state
  UNION ALL SELECT 'submitted', count(*), 0 FROM job_events WHERE from_state IS NULL
  UNION ALL SELECT 'preemptions', count(*), 0 FROM job_events
    WHERE from_state = 'RUNNING' AND to_state = 'QUEUED' AND reason LIKE 'preempted by %'
  UNION ALL SELECT 'placement_latency:' || overlay_le(s), count(*), sum(s)
    FROM (SELECT extract(epoch FROM placed_at - enqueued_at)::float8 AS s FROM jobs
          WHERE placed_at IS NOT NULL) p GROUP BY 1
  UNION ALL SELECT 'queue_wait:' || overlay_le(s), count(*), sum(s)
    FROM (SELECT extract(epoch FROM started_at - enqueued_at)::float8 AS s FROM jobs
          WHERE started_at IS NOT NULL) w GROUP BY 1
) c GROUP BY name
"""


BUMP = text("INSERT INTO job_counter_deltas (name, n, total) VALUES (:name, 1, 0)")


def bump(session: Session, name: str) -> None:
    """Count one more of ``name`` (a counter no trigger keeps: ``preemptions``), in the caller's
    transaction."""
    session.execute(BUMP, {"name": name})


def compact(session: Session) -> bool:
    """Fold the deltas into the counters; False if another compactor holds the lock."""
    if not session.scalar(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": COMPACT_LOCK}):
        return False
    session.execute(COMPACT)
    return True


def fold_and_read(session: Session) -> dict[str, tuple[int, float]]:
    """``compact`` (if no one else is folding) and ``read``, in one statement."""
    rows = session.execute(FOLD_AND_READ, {"k": COMPACT_LOCK})
    return {name: (int(n), float(total)) for name, n, total in rows}


def read(session: Session) -> dict[str, tuple[int, float]]:
    """Every counter by name: (count, sum of observed seconds; 0 for plain counts)."""
    return {name: (int(n), float(total)) for name, n, total in session.execute(READ)}


def rebuild(session: Session) -> None:
    """Recount everything from the jobs and events stored (slow: reads every row)."""
    session.execute(text(REBUILD))


def rebuild_on(conn: Connection) -> None:
    """``rebuild`` on a Core connection (bulk loaders work without an ORM session)."""
    conn.execute(text(REBUILD))
