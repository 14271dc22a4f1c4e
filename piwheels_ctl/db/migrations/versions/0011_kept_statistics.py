"""The front page's figures kept: the projects with a page (a version), the current builds per
ABI and status and failures by reason kept by the counts triggers; builds indexed by start (the
last hours' and days' builds)

Revision ID: 0011
Revises: 0009
Create Date: 2026-11-23
"""

from alembic import op

from piwheels_ctl.db import counts

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The triggers of counts.SHARES as they are now, and every count recounted once.
    counts.drop_triggers(op.get_bind())
    counts.create_triggers(op.get_bind())
    counts.fill(op.get_bind())
    op.create_index("ix_builds_started", "builds", ["started_at"])


def downgrade() -> None:
    # The triggers stay: the counts they add beside the older ones are read by nothing older.
    op.drop_index("ix_builds_started", table_name="builds")
