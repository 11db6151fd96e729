"""Sharing a cluster: accounts (share, GPU quota), users, their memberships and API tokens
(hashes only), each job's user, account and whether it borrowed, and per-attempt GPU usage.

Existing jobs belong to the implicit user and account ``default``.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("jobs", sa.Column("user_name", sa.String(128), nullable=False, server_default="default"))
    op.add_column("jobs", sa.Column("account", sa.String(128), nullable=False, server_default="default"))
    op.add_column("jobs", sa.Column("borrowed", sa.Boolean(), nullable=False, server_default="false"))
    op.create_index("ix_jobs_user_name", "jobs", ["user_name"])
    op.create_index("ix_jobs_account", "jobs", ["account"])
    op.create_table(
        "accounts",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("share", sa.Float(), nullable=False),
        sa.Column("quota_gpus", sa.Integer(), nullable=True),
        sa.Column("quota_models", postgresql.JSONB(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_table(
        "users",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("default_account", sa.String(128), sa.ForeignKey("accounts.name"), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_table(
        "account_members",
        sa.Column("user_name", sa.String(128), sa.ForeignKey("users.name", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("account", sa.String(128), sa.ForeignKey("accounts.name", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("coordinator", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_account_members_account", "account_members", ["account"])
    op.create_table(
        "api_tokens",
        sa.Column("key", sa.String(32), primary_key=True),
        sa.Column("user_name", sa.String(128), sa.ForeignKey("users.name", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("revoked_at", TZ, nullable=True),
    )
    op.create_index("ix_api_tokens_user_name", "api_tokens", ["user_name"])
    op.create_table(
        "attempt_usage",
        sa.Column("job_id", sa.String(128), primary_key=True),
        sa.Column("attempt", sa.Integer(), primary_key=True),
        sa.Column("user_name", sa.String(128), nullable=False),
        sa.Column("account", sa.String(128), nullable=False),
        sa.Column("node", sa.String(128), nullable=False),
        sa.Column("gpu_model", sa.String(255), nullable=False),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("ended_at", TZ, nullable=False),
        sa.Column("gpu_seconds", sa.Float(), nullable=False),
    )
    op.create_index("ix_attempt_usage_ended_at", "attempt_usage", ["ended_at"])
    op.create_table(
        "usage_totals",
        sa.Column("account", sa.String(128), primary_key=True),
        sa.Column("user_name", sa.String(128), primary_key=True),
        sa.Column("gpu_seconds", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("usage_totals")
    op.drop_table("attempt_usage")
    op.drop_table("api_tokens")
    op.drop_table("account_members")
    op.drop_table("users")
    op.drop_table("accounts")
    op.drop_index("ix_jobs_account", table_name="jobs")
    op.drop_index("ix_jobs_user_name", table_name="jobs")
    op.drop_column("jobs", "borrowed")
    op.drop_column("jobs", "account")
    op.drop_column("jobs", "user_name")
