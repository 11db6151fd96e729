"""Preemption: jobs.preemptible (a job submitted preemptible: false is never preempted, and
may not borrow), jobs.preemptions (how many of its attempts were preempted: they raise
the attempt count without using up max_retries), and jobs.preempted_by / preempted_at (the
job its current attempt was preempted for, and when: while that attempt stops, within
PREEMPT_GRACE_S, it keeps its GPUs and the job is not placed again).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("preemptible", sa.Boolean(), nullable=False, server_default="true"))
    op.add_column("jobs", sa.Column("preemptions", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("jobs", sa.Column("preempted_by", sa.String(128), nullable=True))
    op.add_column("jobs", sa.Column("preempted_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "preempted_at")
    op.drop_column("jobs", "preempted_by")
    op.drop_column("jobs", "preemptions")
    op.drop_column("jobs", "preemptible")
