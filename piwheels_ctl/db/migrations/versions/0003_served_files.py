"""served_files: every file name the index ever served, so a name is never reused with other bytes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "served_files",
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("first_served", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("filename", name=op.f("pk_served_files")),
    )
    # The files published so far were served under their names: those names are taken.
    op.execute(
        "INSERT INTO served_files (filename, sha256, size, first_served)"
        " SELECT filename, sha256, size, uploaded_at FROM files"
    )


def downgrade() -> None:
    op.drop_table("served_files")
