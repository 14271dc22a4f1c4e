"""an index per OS release: files.release (the release of the builder that built a file, kept
as it was at build time) and release_checks (a compiled file loaded by a builder of another
release, or waiting for one, and what came of it)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.add_column(sa.Column("release", sa.String(64), nullable=True))
    op.create_table(
        "release_checks",
        sa.Column("file_id", sa.Integer(), nullable=False),
        sa.Column("release", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("builder_id", sa.Integer(), nullable=True),
        sa.Column("lease_expires", sa.DateTime(timezone=True), nullable=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failures", sa.JSON(), nullable=True),
        sa.Column("notes", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["file_id"], ["files.id"], name="fk_release_checks_file_id_files", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["builder_id"], ["builders.id"], name="fk_release_checks_builder_id_builders", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("file_id", "release", name="pk_release_checks"),
    )
    op.create_index("ix_release_checks_status", "release_checks", ["release", "status"])


def downgrade() -> None:
    op.drop_index("ix_release_checks_status", table_name="release_checks")
    op.drop_table("release_checks")
    with op.batch_alter_table("files") as batch:
        batch.drop_column("release")
