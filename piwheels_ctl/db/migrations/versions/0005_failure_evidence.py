"""builds.failure_evidence and failure_packages, handbacks, and no-sdist versions no longer skipped

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("builds") as batch:
        batch.add_column(sa.Column("failure_evidence", sa.Text(), nullable=True))
        batch.add_column(sa.Column("failure_packages", sa.JSON(), nullable=True))
    op.create_table(
        "handbacks",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("abi_id", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["abi_id"], ["abis.id"], name=op.f("fk_handbacks_abi_id_abis"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["version_id"], ["versions.id"], name=op.f("fk_handbacks_version_id_versions"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("version_id", "abi_id", name=op.f("pk_handbacks")),
    )
    # A release without an sdist waits for one ("no-sdist", from the missing sdist itself); it
    # was marked skipped before.
    op.execute("UPDATE versions SET skip_reason = NULL WHERE skip_reason = 'binary only'")


def downgrade() -> None:
    op.execute(
        "UPDATE versions SET skip_reason = 'binary only' WHERE sdist_url IS NULL AND skip_reason IS NULL"
    )
    op.drop_table("handbacks")
    with op.batch_alter_table("builds") as batch:
        batch.drop_column("failure_packages")
        batch.drop_column("failure_evidence")
