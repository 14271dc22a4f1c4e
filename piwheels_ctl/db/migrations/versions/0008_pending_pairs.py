"""pending_pairs: the queue as rows of its own; counts kept by triggers; indexes for the controller's lookups

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op
from packaging.specifiers import InvalidSpecifier, SpecifierSet

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


# The counts triggers this revision creates: the SQL db/counts.py emitted when the migration was
# frozen (the same as 0011's), written out here because a migration never calls today's code, whose
# models and rules may by then name columns this schema does not have. Each statement adds one
# count's share of the row (NEW) or takes it away (OLD); a share of 0 (a build under way) writes
# nothing, so that claims and hand-backs lock no counter row.
def _share(name: str, value: str) -> str:
    return (
        "INSERT INTO counts (name, value) SELECT share.name, share.value FROM "  # noqa: S608 (this file's SQL)
        f"(SELECT {name} AS name, "
        f"{value} AS value) AS share WHERE share.value <> 0 "
        "ON CONFLICT (name) DO UPDATE SET value = counts.value + excluded.value"
    )


# A project's first version adds it to the projects with a page, its last one takes it away.
_FIRST = (
    "CASE WHEN NOT EXISTS (SELECT 1 FROM versions other "
    "WHERE other.project_id = {0}.project_id AND other.id <> {0}.id) THEN 1 ELSE 0 END"
)

# Per table: the columns whose change moves a count, then the statements of a row that comes
# (NEW) and of a row that goes (OLD).
_COUNTED: dict[str, tuple[str, list[str], list[str]]] = {
    "projects": (
        "watched",
        [_share("'projects'", "(1)"), _share("'watched'", "(CASE WHEN NEW.watched THEN 1 ELSE 0 END)")],
        [_share("'projects'", "-(1)"), _share("'watched'", "-(CASE WHEN OLD.watched THEN 1 ELSE 0 END)")],
    ),
    "versions": (
        "",
        [_share("'versions'", "(1)"), _share("'pages'", f"({_FIRST.format('NEW')})")],
        [_share("'versions'", "-(1)"), _share("'pages'", f"-({_FIRST.format('OLD')})")],
    ),
    "builds": (
        "status, failure_reason, superseded, abi_id",
        [
            _share("'builds:' || NEW.status", "(CASE WHEN NEW.status <> 'building' THEN 1 ELSE 0 END)"),
            _share(
                "'failed:' || coalesce(NEW.failure_reason, '')",
                "(CASE WHEN NEW.status = 'failed' THEN 1 ELSE 0 END)",
            ),
            _share(
                "'abi:' || NEW.abi_id || ':' || NEW.status",
                "(CASE WHEN NEW.status <> 'building' AND NOT NEW.superseded THEN 1 ELSE 0 END)",
            ),
            _share(
                "'reason:' || coalesce(NEW.failure_reason, '')",
                "(CASE WHEN NEW.status = 'failed' AND NOT NEW.superseded THEN 1 ELSE 0 END)",
            ),
        ],
        [
            _share("'builds:' || OLD.status", "-(CASE WHEN OLD.status <> 'building' THEN 1 ELSE 0 END)"),
            _share(
                "'failed:' || coalesce(OLD.failure_reason, '')",
                "-(CASE WHEN OLD.status = 'failed' THEN 1 ELSE 0 END)",
            ),
            _share(
                "'abi:' || OLD.abi_id || ':' || OLD.status",
                "-(CASE WHEN OLD.status <> 'building' AND NOT OLD.superseded THEN 1 ELSE 0 END)",
            ),
            _share(
                "'reason:' || coalesce(OLD.failure_reason, '')",
                "-(CASE WHEN OLD.status = 'failed' AND NOT OLD.superseded THEN 1 ELSE 0 END)",
            ),
        ],
    ),
    "files": (
        "size, mirrored",
        [
            _share("'files'", "(1)"),
            _share("'bytes'", "(NEW.size)"),
            _share("'mirrored'", "(CASE WHEN NEW.mirrored THEN 1 ELSE 0 END)"),
        ],
        [
            _share("'files'", "-(1)"),
            _share("'bytes'", "-(OLD.size)"),
            _share("'mirrored'", "-(CASE WHEN OLD.mirrored THEN 1 ELSE 0 END)"),
        ],
    ),
}


def _sqlite_triggers() -> list[str]:
    """A trigger per table and event, all AFTER the row changed."""
    statements = []
    for table, (columns, new, old) in _COUNTED.items():
        statements += [
            f"CREATE TRIGGER counts_{table}_insert AFTER INSERT ON {table} BEGIN {'; '.join(new)}; END",
            f"CREATE TRIGGER counts_{table}_delete AFTER DELETE ON {table} BEGIN {'; '.join(old)}; END",
        ]
        if columns:
            statements.append(
                f"CREATE TRIGGER counts_{table}_update AFTER UPDATE OF {columns} ON {table} "
                f"BEGIN {'; '.join(old + new)}; END"
            )
    return statements


def _postgresql_triggers() -> list[str]:
    """A function and a trigger per table. The versions' 'pages' share looks at the table's other
    rows: PostgreSQL fires AFTER row triggers once the whole statement is done, so that trigger
    fires BEFORE, each row seeing the rows before it, as on SQLite."""
    statements = []
    for table, (columns, new, old) in _COUNTED.items():
        statements.append(
            f"CREATE FUNCTION counts_{table}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF TG_OP IN ('DELETE', 'UPDATE') THEN {'; '.join(old)}; END IF; "
            f"IF TG_OP IN ('INSERT', 'UPDATE') THEN {'; '.join(new)}; END IF; "
            "IF TG_OP = 'DELETE' THEN RETURN OLD; END IF; RETURN NEW; END $$"
        )
        timing = "BEFORE" if table == "versions" else "AFTER"
        update = f" OR UPDATE OF {columns}" if columns else ""
        statements.append(
            f"CREATE TRIGGER counts_{table} {timing} INSERT OR DELETE{update} ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION counts_{table}()"
        )
    return statements


COUNTS_TRIGGERS = {"sqlite": _sqlite_triggers(), "postgresql": _postgresql_triggers()}
COUNTS_DROP = {
    "sqlite": [
        f"DROP TRIGGER IF EXISTS counts_{table}_{event}"
        for table in _COUNTED
        for event in ("insert", "delete", "update")
    ],
    "postgresql": [
        statement
        for table in _COUNTED
        for statement in (
            f"DROP TRIGGER IF EXISTS counts_{table} ON {table}",
            f"DROP FUNCTION IF EXISTS counts_{table}()",
        )
    ],
}

# Every count from scratch.
COUNTS_FILL = (
    "DELETE FROM counts",
    "INSERT INTO counts (name, value) SELECT 'projects', sum(1) FROM projects GROUP BY 1",
    "INSERT INTO counts (name, value) "
    "SELECT 'watched', sum(CASE WHEN projects.watched THEN 1 ELSE 0 END) FROM projects GROUP BY 1",
    "INSERT INTO counts (name, value) SELECT 'versions', sum(1) FROM versions GROUP BY 1",
    "INSERT INTO counts (name, value) SELECT 'pages', count(DISTINCT project_id) FROM versions",
    "INSERT INTO counts (name, value) SELECT 'builds:' || builds.status, "
    "sum(CASE WHEN builds.status <> 'building' THEN 1 ELSE 0 END) FROM builds GROUP BY 1",
    "INSERT INTO counts (name, value) SELECT 'failed:' || coalesce(builds.failure_reason, ''), "
    "sum(CASE WHEN builds.status = 'failed' THEN 1 ELSE 0 END) FROM builds GROUP BY 1",
    "INSERT INTO counts (name, value) SELECT 'abi:' || builds.abi_id || ':' || builds.status, "
    "sum(CASE WHEN builds.status <> 'building' AND NOT builds.superseded THEN 1 ELSE 0 END) "
    "FROM builds GROUP BY 1",
    "INSERT INTO counts (name, value) SELECT 'reason:' || coalesce(builds.failure_reason, ''), "
    "sum(CASE WHEN builds.status = 'failed' AND NOT builds.superseded THEN 1 ELSE 0 END) "
    "FROM builds GROUP BY 1",
    "INSERT INTO counts (name, value) SELECT 'files', sum(1) FROM files GROUP BY 1",
    "INSERT INTO counts (name, value) SELECT 'bytes', sum(files.size) FROM files GROUP BY 1",
    "INSERT INTO counts (name, value) "
    "SELECT 'mirrored', sum(CASE WHEN files.mirrored THEN 1 ELSE 0 END) FROM files GROUP BY 1",
)


# Every pending pair, as queue_upkeep.refresh_all computed them at this revision (frozen here): a
# (version, ABI) pair is pending when the ABI is active, the version is tracked (its project
# watched, or the version asked for), neither is skipped, it has an sdist, it is not yanked
# (unless asked for), and no wheel of ours, no upstream wheel and no current build covers the
# pair. Versions without a release time sort last (NO_TIME).
NO_TIME = datetime(1, 1, 1, tzinfo=timezone.utc)
QUEUE_FILL = sa.text(
    "INSERT INTO pending_pairs (version_id, abi_id, priority, sort_time) "
    "SELECT versions.id, abis.id, versions.priority, coalesce(versions.release_time, :no_time) "
    "FROM versions JOIN projects ON versions.project_id = projects.id JOIN abis ON 1 = 1 "
    "WHERE abis.active = :yes AND (projects.watched = :yes OR versions.priority > 0) "
    "AND projects.skip_reason IS NULL AND versions.skip_reason IS NULL "
    "AND versions.sdist_url IS NOT NULL AND (versions.yanked = :no OR versions.priority > 0) "
    "AND NOT EXISTS (SELECT 1 FROM coverage "
    "WHERE coverage.version_id = versions.id AND coverage.abi_id = abis.id) "
    "AND NOT EXISTS (SELECT 1 FROM upstream_coverage "
    "WHERE upstream_coverage.version_id = versions.id AND upstream_coverage.abi_id = abis.id) "
    "AND NOT EXISTS (SELECT 1 FROM builds "
    "WHERE builds.version_id = versions.id AND builds.abi_id = abis.id AND builds.superseded = :no)"
).bindparams(
    sa.bindparam("no_time", NO_TIME, type_=sa.DateTime(timezone=True)),
    sa.bindparam("yes", True, type_=sa.Boolean()),
    sa.bindparam("no", False, type_=sa.Boolean()),
)

# Then the pairs whose version's Requires-Python the ABI's interpreter does not satisfy go: each
# distinct (Requires-Python, ABI) among the pending pairs is judged once, in Python, and those
# that exclude are taken out by one statement through a table of them.
LIMITED = (
    "SELECT DISTINCT versions.requires_python, abis.id, abis.python_tag FROM pending_pairs "
    "JOIN versions ON versions.id = pending_pairs.version_id JOIN abis ON abis.id = pending_pairs.abi_id "
    "WHERE versions.requires_python IS NOT NULL"
)
EXCLUDED = (
    "CREATE TEMPORARY TABLE excluded_0008 (abi_id INTEGER NOT NULL, requires_python VARCHAR NOT NULL, "
    "PRIMARY KEY (abi_id, requires_python))",
    "INSERT INTO excluded_0008 (abi_id, requires_python) VALUES (:abi_id, :requires_python)",
    "DELETE FROM pending_pairs WHERE EXISTS (SELECT 1 FROM versions JOIN excluded_0008 "
    "ON excluded_0008.requires_python = versions.requires_python "
    "WHERE versions.id = pending_pairs.version_id AND excluded_0008.abi_id = pending_pairs.abi_id)",
    "DROP TABLE excluded_0008",
)


def _runs_on(requires_python: str, python_tag: str) -> bool:
    """Whether a version with ``requires_python`` installs on ``python_tag``'s interpreter (the
    rule of abi.runs_on at this revision): a broken Requires-Python excludes nothing, and the ABI
    stands for the newest patch release of its minor version."""
    if not requires_python:
        return True
    try:
        spec = SpecifierSet(requires_python)
    except InvalidSpecifier:
        return True
    digits = python_tag[2:]
    return spec.contains(f"{int(digits[0])}.{int(digits[1:] or 0)}.999", prereleases=True)


def _fill_the_queue(bind: sa.Connection) -> None:
    bind.execute(QUEUE_FILL)
    excluded = [
        {"abi_id": abi_id, "requires_python": requires}
        for requires, abi_id, python_tag in bind.execute(sa.text(LIMITED))
        if not _runs_on(requires, python_tag)
    ]
    if not excluded:
        return
    create, insert, delete, drop = (sa.text(statement) for statement in EXCLUDED)
    bind.execute(create)
    bind.execute(insert, excluded)
    bind.execute(delete)
    bind.execute(drop)


def upgrade() -> None:
    op.create_table(
        "pending_pairs",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("abi_id", sa.Integer(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("sort_time", sa.DateTime(timezone=True), nullable=False),
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
    bind = op.get_bind()
    for statement in [*COUNTS_TRIGGERS[bind.dialect.name], *COUNTS_FILL]:
        bind.execute(sa.text(statement))
    _fill_the_queue(bind)


def downgrade() -> None:
    bind = op.get_bind()
    for statement in COUNTS_DROP[bind.dialect.name]:
        bind.execute(sa.text(statement))
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
