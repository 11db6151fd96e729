"""The run-time cluster state table is `cluster_state`, not `settings` (Settings is the configuration).

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.rename_table("settings", "cluster_state")
    op.execute("ALTER INDEX settings_pkey RENAME TO cluster_state_pkey")


def downgrade() -> None:
    op.execute("ALTER INDEX cluster_state_pkey RENAME TO settings_pkey")
    op.rename_table("cluster_state", "settings")
