"""builds that compiled something indexed: ``status``'s compiler cache figure reads the newest
of them, not the builds table backwards until it has found them

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    where = sa.text("ccache_hits IS NOT NULL")
    op.create_index("ix_builds_ccache", "builds", ["id"], sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    op.drop_index("ix_builds_ccache", table_name="builds")
