"""Costs that do not grow with history: job counters kept by triggers, indexes for lists and retention.

/metrics read every job and event on every scrape. Triggers on jobs and job_events now
append each change to job_counter_deltas in the writer's own transaction (an insert: no
row lock another writer could wait on); overlay/store/counters.py folds the deltas into
job_counters. The counters start from the rows already stored.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# The histograms' upper bounds in seconds; web/metrics.py's DURATION_BUCKETS are the same
# (tests/store/test_counters.py checks it).
BOUNDS = "{0.05,0.1,0.25,0.5,1,2.5,5,10,30,60,120,300,600,1800,3600,14400,86400}"

FUNCTIONS = f"""
CREATE FUNCTION overlay_le(secs double precision) RETURNS text LANGUAGE sql IMMUTABLE AS $$
  SELECT coalesce((SELECT min(b) FROM unnest('{BOUNDS}'::float8[]) AS b WHERE secs <= b)::text, '+Inf')
$$;

CREATE FUNCTION overlay_count_job() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  secs double precision;
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    INSERT INTO job_counter_deltas (name, n, total) VALUES ('jobs:' || OLD.status, -1, 0);
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    INSERT INTO job_counter_deltas (name, n, total) VALUES ('jobs:' || NEW.status, 1, 0);
  END IF;
  IF TG_OP = 'UPDATE' AND NEW.status = 'PLACED' AND NEW.placed_at IS NOT NULL THEN
    secs := extract(epoch FROM NEW.placed_at - NEW.enqueued_at);
    INSERT INTO job_counter_deltas (name, n, total)
      VALUES ('placement_latency:' || overlay_le(secs), 1, secs);
  END IF;
  IF TG_OP = 'UPDATE' AND NEW.status = 'RUNNING' AND NEW.started_at IS NOT NULL THEN
    secs := extract(epoch FROM NEW.started_at - NEW.enqueued_at);
    INSERT INTO job_counter_deltas (name, n, total)
      VALUES ('queue_wait:' || overlay_le(secs), 1, secs);
  END IF;
  RETURN NULL;
END $$;

CREATE FUNCTION overlay_count_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO job_counter_deltas (name, n, total) VALUES ('entered:' || NEW.to_state, 1, 0);
  IF NEW.from_state IS NULL THEN
    INSERT INTO job_counter_deltas (name, n, total) VALUES ('submitted', 1, 0);
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER jobs_count_rows AFTER INSERT OR DELETE ON jobs
  FOR EACH ROW EXECUTE FUNCTION overlay_count_job();
CREATE TRIGGER jobs_count_moves AFTER UPDATE OF status ON jobs
  FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION overlay_count_job();
CREATE TRIGGER job_events_count AFTER INSERT ON job_events
  FOR EACH ROW EXECUTE FUNCTION overlay_count_event();
"""

# The counters of the rows already stored (a histogram gets one observation per job:
# its latest placement and start, which is what the old scrape reported).
SEED = """
INSERT INTO job_counters (name, n, total)
SELECT name, sum(n), sum(total) FROM (
  SELECT 'jobs:' || status AS name, count(*) AS n, 0::float8 AS total FROM jobs GROUP BY status
  UNION ALL SELECT 'entered:' || to_state, count(*), 0 FROM job_events GROUP BY to_state
  UNION ALL SELECT 'submitted', count(*), 0 FROM job_events WHERE from_state IS NULL
  UNION ALL SELECT 'placement_latency:' || overlay_le(s), count(*), sum(s)
    FROM (SELECT extract(epoch FROM placed_at - enqueued_at)::float8 AS s FROM jobs
          WHERE placed_at IS NOT NULL) p GROUP BY 1
  UNION ALL SELECT 'queue_wait:' || overlay_le(s), count(*), sum(s)
    FROM (SELECT extract(epoch FROM started_at - enqueued_at)::float8 AS s FROM jobs
          WHERE started_at IS NOT NULL) w GROUP BY 1
) c GROUP BY name
"""


def upgrade() -> None:
    op.create_table(
        "job_counters",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "job_counter_deltas",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.drop_index("ix_jobs_status", table_name="jobs")
    op.create_index("ix_jobs_status_enqueued_at", "jobs", ["status", "enqueued_at"])
    op.create_index("ix_jobs_enqueued_at", "jobs", ["enqueued_at"])
    op.create_index("ix_jobs_finished_at", "jobs", ["finished_at"])
    op.execute(FUNCTIONS)
    op.execute(SEED)


def downgrade() -> None:
    op.execute("DROP TRIGGER job_events_count ON job_events")
    op.execute("DROP TRIGGER jobs_count_moves ON jobs")
    op.execute("DROP TRIGGER jobs_count_rows ON jobs")
    op.execute("DROP FUNCTION overlay_count_event(), overlay_count_job(), overlay_le(double precision)")
    op.drop_index("ix_jobs_finished_at", table_name="jobs")
    op.drop_index("ix_jobs_enqueued_at", table_name="jobs")
    op.drop_index("ix_jobs_status_enqueued_at", table_name="jobs")
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.drop_table("job_counter_deltas")
    op.drop_table("job_counters")
