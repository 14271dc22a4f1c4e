"""builds.ccache_hits, builds.ccache_misses: the compiler cache's hits and misses of each build

Revision ID: 0010
Revises: 0007
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("builds") as batch:
        batch.add_column(sa.Column("ccache_hits", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("ccache_misses", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("builds") as batch:
        batch.drop_column("ccache_misses")
        batch.drop_column("ccache_hits")
