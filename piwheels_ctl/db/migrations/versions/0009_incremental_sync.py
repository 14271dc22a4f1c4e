"""projects.serial, last_modified, deleted_at (a sync that costs what changed) and listed_name
(the root index patched, not re-rendered)

Revision ID: 0009
Revises: 0007
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("last_modified", sa.String(64), nullable=True))
        batch.add_column(sa.Column("serial", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("listed_name", sa.String(255), nullable=True))
    # Until now the root listed every project with a file, under its display name.
    op.execute(
        "UPDATE projects SET listed_name = display_name WHERE EXISTS ("
        "SELECT 1 FROM versions JOIN files ON files.version_id = versions.id"
        " WHERE versions.project_id = projects.id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("listed_name")
        batch.drop_column("deleted_at")
        batch.drop_column("serial")
        batch.drop_column("last_modified")
