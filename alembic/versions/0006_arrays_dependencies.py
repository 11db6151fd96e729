"""Job arrays and dependencies: the arrays table, each job's array_id and array_index, and
job_dependencies (afterok/afterany/afternotok on a job or an array).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "arrays",
        sa.Column("array_id", sa.String(128), primary_key=True),
        sa.Column("expression", sa.Text(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("max_running", sa.Integer(), nullable=True),
        sa.Column("user_name", sa.String(128), nullable=False),
        sa.Column("account", sa.String(128), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.add_column("jobs", sa.Column("array_id", sa.String(128), nullable=True))
    op.add_column("jobs", sa.Column("array_index", sa.Integer(), nullable=True))
    op.create_index("ix_jobs_array_id_array_index", "jobs", ["array_id", "array_index"], unique=True)
    op.create_index("ix_jobs_array_id_status", "jobs", ["array_id", "status"])
    op.create_table(
        "job_dependencies",
        sa.Column("job_id", sa.String(128), sa.ForeignKey("jobs.job_id", ondelete="CASCADE"), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("target", sa.String(128), primary_key=True),
    )
    op.create_index("ix_job_dependencies_target", "job_dependencies", ["target"])


def downgrade() -> None:
    op.drop_index("ix_job_dependencies_target", table_name="job_dependencies")
    op.drop_table("job_dependencies")
    op.drop_index("ix_jobs_array_id_status", table_name="jobs")
    op.drop_index("ix_jobs_array_id_array_index", table_name="jobs")
    op.drop_column("jobs", "array_index")
    op.drop_column("jobs", "array_id")
    op.drop_table("arrays")
