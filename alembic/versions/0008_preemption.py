"""Preemption: jobs.preemptible (a job submitted preemptible: false is never preempted, and
may not borrow) and jobs.preemptions (how many of its attempts were preempted: they rise
the attempt count without using up max_retries).

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


def downgrade() -> None:
    op.drop_column("jobs", "preemptions")
    op.drop_column("jobs", "preemptible")
