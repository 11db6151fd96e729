"""Gang jobs: jobs.nodes (how many nodes the job's parts run on), jobs.master_addr and
jobs.master_port (the current attempt's rendezvous), job_parts (each part's node, GPUs and
end), and attempt_usage keyed by node too (a gang attempt's parts are released one by one).

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("jobs", sa.Column("nodes", sa.Integer(), nullable=False, server_default="1"))
    op.add_column("jobs", sa.Column("master_addr", sa.String(255), nullable=True))
    op.add_column("jobs", sa.Column("master_port", sa.Integer(), nullable=True))
    op.create_table(
        "job_parts",
        sa.Column("job_id", sa.String(128), sa.ForeignKey("jobs.job_id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("part", sa.Integer(), primary_key=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("node", sa.String(128), nullable=False),
        sa.Column("gpu_indices", postgresql.JSONB(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("log_tail", sa.Text(), nullable=False),
        sa.Column("started_at", TZ, nullable=True),
        sa.Column("finished_at", TZ, nullable=True),
    )
    op.create_index("ix_job_parts_node", "job_parts", ["node"])
    op.drop_constraint("attempt_usage_pkey", "attempt_usage", type_="primary")
    op.create_primary_key("attempt_usage_pkey", "attempt_usage", ["job_id", "attempt", "node"])


def downgrade() -> None:
    op.drop_constraint("attempt_usage_pkey", "attempt_usage", type_="primary")
    op.execute("DELETE FROM attempt_usage a USING attempt_usage b WHERE a.job_id = b.job_id "
               "AND a.attempt = b.attempt AND a.node > b.node")
    op.create_primary_key("attempt_usage_pkey", "attempt_usage", ["job_id", "attempt"])
    op.drop_table("job_parts")
    op.drop_column("jobs", "master_port")
    op.drop_column("jobs", "master_addr")
    op.drop_column("jobs", "nodes")
