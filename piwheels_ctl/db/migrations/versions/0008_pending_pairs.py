"""pending_pairs: the queue as rows of its own; counts kept by triggers; indexes for the controller's lookups

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.orm import Session

from piwheels_ctl.db import counts
from piwheels_ctl.db.models import UTCDateTime
from piwheels_ctl.queue.upkeep import refresh_all

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pending_pairs",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("abi_id", sa.Integer(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("sort_time", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"], ["versions.id"], name="fk_pending_pairs_version_id_versions", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["abi_id"], ["abis.id"], name="fk_pending_pairs_abi_id_abis", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("version_id", "abi_id", name="pk_pending_pairs"),
    )
    op.create_index(
        "ix_pending_pairs_order", "pending_pairs", ["priority", "sort_time", "version_id", "abi_id"]
    )
    op.create_index(
        "ix_pending_pairs_abi", "pending_pairs", ["abi_id", "priority", "sort_time", "version_id"]
    )
    op.create_index("ix_builds_status_reason", "builds", ["status", "failure_reason"])
    op.create_index("ix_builds_builder_started", "builds", ["builder_id", "started_at"])
    op.create_index("ix_files_build_id", "files", ["build_id"])
    op.create_index("ix_files_tags", "files", ["python_tag", "abi_tag", "platform_tag"])
    op.create_index(
        "ix_versions_no_sdist",
        "versions",
        ["release_time"],
        sqlite_where=sa.text("sdist_url IS NULL"),
        postgresql_where=sa.text("sdist_url IS NULL"),
    )
    for table, column, index in (
        ("projects", "id", "ix_projects_skipped"),
        ("versions", "project_id", "ix_versions_skipped"),
    ):
        op.create_index(
            index,
            table,
            [column],
            sqlite_where=sa.text("skip_reason IS NOT NULL"),
            postgresql_where=sa.text("skip_reason IS NOT NULL"),
        )
    op.create_table(
        "counts",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_counts"),
    )
    counts.create_triggers(op.get_bind())
    counts.fill(op.get_bind())
    with Session(bind=op.get_bind()) as session:
        refresh_all(session)
        session.flush()


def downgrade() -> None:
    counts.drop_triggers(op.get_bind())
    op.drop_table("counts")
    op.drop_index("ix_versions_skipped", table_name="versions")
    op.drop_index("ix_projects_skipped", table_name="projects")
    op.drop_index("ix_versions_no_sdist", table_name="versions")
    op.drop_index("ix_files_tags", table_name="files")
    op.drop_index("ix_files_build_id", table_name="files")
    op.drop_index("ix_builds_builder_started", table_name="builds")
    op.drop_index("ix_builds_status_reason", table_name="builds")
    op.drop_index("ix_pending_pairs_abi", table_name="pending_pairs")
    op.drop_index("ix_pending_pairs_order", table_name="pending_pairs")
    op.drop_table("pending_pairs")
