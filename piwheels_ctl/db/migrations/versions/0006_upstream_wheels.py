"""upstream_wheels and upstream_coverage: what the upstream already ships is not built; files.mirrored

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.add_column(sa.Column("mirrored", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.create_table(
        "upstream_wheels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("requires_python", sa.String(length=255), nullable=True),
        sa.Column("file_id", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("given_up", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["file_id"], ["files.id"], name=op.f("fk_upstream_wheels_file_id_files"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["versions.id"],
            name=op.f("fk_upstream_wheels_version_id_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_upstream_wheels")),
        sa.UniqueConstraint("version_id", "filename", name=op.f("uq_upstream_wheels_version_id")),
    )
    op.create_table(
        "upstream_coverage",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("abi_id", sa.Integer(), nullable=False),
        sa.Column("wheel_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["abi_id"], ["abis.id"], name=op.f("fk_upstream_coverage_abi_id_abis"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["versions.id"],
            name=op.f("fk_upstream_coverage_version_id_versions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["wheel_id"],
            ["upstream_wheels.id"],
            name=op.f("fk_upstream_coverage_wheel_id_upstream_wheels"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("version_id", "abi_id", "wheel_id", name=op.f("pk_upstream_coverage")),
    )
    op.create_index(op.f("ix_upstream_coverage_wheel_id"), "upstream_coverage", ["wheel_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_upstream_coverage_wheel_id"), table_name="upstream_coverage")
    op.drop_table("upstream_coverage")
    op.drop_table("upstream_wheels")
    with op.batch_alter_table("files") as batch:
        batch.drop_column("mirrored")
