"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "abis",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(length=128), nullable=False),
        sa.Column("python_tag", sa.String(length=32), nullable=False),
        sa.Column("abi_tag", sa.String(length=32), nullable=False),
        sa.Column("platform_tag", sa.String(length=64), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_abis")),
        sa.UniqueConstraint("tag", name=op.f("uq_abis_tag")),
    )
    op.create_table(
        "builders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("user", sa.String(length=64), nullable=True),
        sa.Column("key_file", sa.Text(), nullable=True),
        sa.Column("host_key", sa.Text(), nullable=True),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("healthy", sa.Boolean(), nullable=False),
        sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("info", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_builders")),
        sa.UniqueConstraint("name", name=op.f("uq_builders_name")),
    )
    op.create_table(
        "projects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("display_name", sa.String(length=255), nullable=False),
        sa.Column("watched", sa.Boolean(), nullable=False),
        sa.Column("skip_reason", sa.Text(), nullable=True),
        sa.Column("etag", sa.String(length=255), nullable=True),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dirty", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
        sa.UniqueConstraint("name", name=op.f("uq_projects_name")),
    )
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_projects_dirty"), ["dirty"], unique=False)
        batch_op.create_index(batch_op.f("ix_projects_watched"), ["watched"], unique=False)

    op.create_table(
        "builder_pythons",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("builder_id", sa.Integer(), nullable=False),
        sa.Column("abi_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["abi_id"], ["abis.id"], name=op.f("fk_builder_pythons_abi_id_abis")),
        sa.ForeignKeyConstraint(
            ["builder_id"],
            ["builders.id"],
            name=op.f("fk_builder_pythons_builder_id_builders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_builder_pythons")),
        sa.UniqueConstraint("builder_id", "abi_id", name=op.f("uq_builder_pythons_builder_id")),
    )
    op.create_table(
        "versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=128), nullable=False),
        sa.Column("release_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("yanked", sa.Boolean(), nullable=False),
        sa.Column("yanked_reason", sa.Text(), nullable=True),
        sa.Column("skip_reason", sa.Text(), nullable=True),
        sa.Column("sdist_filename", sa.String(length=255), nullable=True),
        sa.Column("sdist_url", sa.Text(), nullable=True),
        sa.Column("sdist_sha256", sa.String(length=64), nullable=True),
        sa.Column("requires_python", sa.String(length=255), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_versions_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_versions")),
        sa.UniqueConstraint("project_id", "version", name=op.f("uq_versions_project_id")),
    )
    with op.batch_alter_table("versions", schema=None) as batch_op:
        batch_op.create_index("ix_versions_queue_order", ["priority", "release_time"], unique=False)

    op.create_table(
        "builds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("abi_id", sa.Integer(), nullable=False),
        sa.Column("builder_id", sa.Integer(), nullable=True),
        sa.Column(
            "status",
            sa.Enum("building", "success", "failed", name="buildstatus", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("lease_expires", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(length=255), nullable=True),
        sa.Column("log_path", sa.Text(), nullable=True),
        sa.Column("failure_reason", sa.String(length=64), nullable=True),
        sa.Column("failure_detail", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["abi_id"], ["abis.id"], name=op.f("fk_builds_abi_id_abis")),
        sa.ForeignKeyConstraint(
            ["builder_id"],
            ["builders.id"],
            name=op.f("fk_builds_builder_id_builders"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["versions.id"],
            name=op.f("fk_builds_version_id_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_builds")),
    )
    with op.batch_alter_table("builds", schema=None) as batch_op:
        batch_op.create_index("ix_builds_version_abi", ["version_id", "abi_id"], unique=False)

    op.create_table(
        "files",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("build_id", sa.Integer(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("python_tag", sa.String(length=64), nullable=False),
        sa.Column("abi_tag", sa.String(length=64), nullable=False),
        sa.Column("platform_tag", sa.String(length=255), nullable=False),
        sa.Column("requires_python", sa.String(length=255), nullable=True),
        sa.Column("metadata_sha256", sa.String(length=64), nullable=False),
        sa.Column("core_metadata", sa.Text(), nullable=False),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["build_id"], ["builds.id"], name=op.f("fk_files_build_id_builds"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["versions.id"],
            name=op.f("fk_files_version_id_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_files")),
        sa.UniqueConstraint("filename", name=op.f("uq_files_filename")),
    )
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_files_version_id"), ["version_id"], unique=False)

    op.create_table(
        "coverage",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("abi_id", sa.Integer(), nullable=False),
        sa.Column("file_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["abi_id"], ["abis.id"], name=op.f("fk_coverage_abi_id_abis"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["file_id"], ["files.id"], name=op.f("fk_coverage_file_id_files"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["versions.id"],
            name=op.f("fk_coverage_version_id_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("version_id", "abi_id", "file_id", name=op.f("pk_coverage")),
    )
    with op.batch_alter_table("coverage", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_coverage_file_id"), ["file_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("coverage", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_coverage_file_id"))

    op.drop_table("coverage")
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_files_version_id"))

    op.drop_table("files")
    with op.batch_alter_table("builds", schema=None) as batch_op:
        batch_op.drop_index("ix_builds_version_abi")

    op.drop_table("builds")
    with op.batch_alter_table("versions", schema=None) as batch_op:
        batch_op.drop_index("ix_versions_queue_order")

    op.drop_table("versions")
    op.drop_table("builder_pythons")
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_projects_watched"))
        batch_op.drop_index(batch_op.f("ix_projects_dirty"))

    op.drop_table("projects")
    op.drop_table("builders")
    op.drop_table("abis")
