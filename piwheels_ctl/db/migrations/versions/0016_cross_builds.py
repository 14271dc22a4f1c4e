"""Cross builds: builds.cross (the Debian architecture a build cross-built for, None: native)
and projects.native_only (why the project goes to native builders only, after a failed cross
build; None: cross builders may take it)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("builds") as batch:
        batch.add_column(sa.Column("cross", sa.String(16), nullable=True))
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("native_only", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("native_only")
    with op.batch_alter_table("builds") as batch:
        batch.drop_column("cross")
