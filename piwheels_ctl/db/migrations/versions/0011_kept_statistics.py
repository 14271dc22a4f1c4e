"""The front page's figures kept: the projects with a page (a version), the current builds per
ABI and status and failures by reason kept by the counts triggers; builds indexed by start (the
last hours' and days' builds)

Revision ID: 0011
Revises: 0009
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


# The counts triggers this revision creates: the SQL db/counts.py emitted when the migration was
# frozen (the same as 0008's), written out here because a migration never calls today's code, whose
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


def upgrade() -> None:
    # The triggers as above in place of the older ones, and every count recounted once.
    bind = op.get_bind()
    for statement in [*COUNTS_DROP[bind.dialect.name], *COUNTS_TRIGGERS[bind.dialect.name], *COUNTS_FILL]:
        bind.execute(sa.text(statement))
    op.create_index("ix_builds_started", "builds", ["started_at"])


def downgrade() -> None:
    # The triggers stay: the counts they add beside the older ones are read by nothing older.
    op.drop_index("ix_builds_started", table_name="builds")
