"""The counts ``status`` shows, kept by the database itself: triggers add and take away each
row's share as it is inserted, deleted or changed, so reading a count costs one indexed row
whatever the farm's size, and no statement (an ORM flush or a bulk one) can miss it.

Builds under way are not counted here (``status`` counts them through the index on status,
a few rows): a claim, and a hand-back, then touch no counter that every claim would wait on.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, select, text
from sqlalchemy.orm import Session

from .models import Count

# Per table: the columns whose change moves a count, and the (name, value) each row adds,
# as SQL on the row (``R``, replaced by NEW or OLD).
SHARES: dict[str, tuple[Sequence[str], Sequence[tuple[str, str]]]] = {
    "projects": (
        ("watched",),
        (("'projects'", "1"), ("'watched'", "CASE WHEN R.watched THEN 1 ELSE 0 END")),
    ),
    "versions": (
        (),
        (
            ("'versions'", "1"),
            # Projects with a version (a page for people): a project's first version adds it,
            # its last one takes it away.
            (
                "'pages'",
                "CASE WHEN NOT EXISTS (SELECT 1 FROM versions other "
                "WHERE other.project_id = R.project_id AND other.id <> R.id) THEN 1 ELSE 0 END",
            ),
        ),
    ),
    "builds": (
        ("status", "failure_reason", "superseded", "abi_id"),
        (
            ("'builds:' || R.status", "CASE WHEN R.status <> 'building' THEN 1 ELSE 0 END"),
            (
                "'failed:' || coalesce(R.failure_reason, '')",
                "CASE WHEN R.status = 'failed' THEN 1 ELSE 0 END",
            ),
            # The current (not superseded) builds: per ABI id and status, and failures by reason
            # (the front page's success per ABI, the statistics' reasons).
            (
                "'abi:' || R.abi_id || ':' || R.status",
                "CASE WHEN R.status <> 'building' AND NOT R.superseded THEN 1 ELSE 0 END",
            ),
            (
                "'reason:' || coalesce(R.failure_reason, '')",
                "CASE WHEN R.status = 'failed' AND NOT R.superseded THEN 1 ELSE 0 END",
            ),
        ),
    ),
    "files": (
        ("size", "mirrored"),
        (("'files'", "1"), ("'bytes'", "R.size"), ("'mirrored'", "CASE WHEN R.mirrored THEN 1 ELSE 0 END")),
    ),
}


# Shares that look at the table's other rows: PostgreSQL fires AFTER row triggers once the whole
# statement is done (a project's versions inserted or deleted together would each see all the
# others, or none), so theirs fire BEFORE, each row seeing the rows before it, as on SQLite.
BEFORE = {"versions"}
# Counted from scratch otherwise than by summing each row's share.
FILLED = {"'pages'": "SELECT 'pages', count(DISTINCT project_id) FROM versions"}


def _adds(row: str, sign: str, shares: Sequence[tuple[str, str]]) -> list[str]:
    """The statements that add ``row``'s shares; a share of 0 (a build under way) writes nothing,
    so that claims and hand-backs lock no counter."""
    return [
        "INSERT INTO counts (name, value) SELECT share.name, share.value FROM "  # noqa: S608 (SHARES' SQL)
        f"(SELECT {name.replace('R.', row + '.')} AS name, "
        f"{sign}({value.replace('R.', row + '.')}) AS value) AS share WHERE share.value <> 0 "
        "ON CONFLICT (name) DO UPDATE SET value = counts.value + excluded.value"
        for name, value in shares
    ]


def create_triggers(conn: Connection) -> None:
    """The triggers that keep ``counts`` (SQLite or PostgreSQL)."""
    for table, (columns, shares) in SHARES.items():
        added, taken = _adds("NEW", "", shares), _adds("OLD", "-", shares)
        if conn.dialect.name == "postgresql":
            conn.execute(
                text(
                    f"CREATE FUNCTION counts_{table}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    f"IF TG_OP IN ('DELETE', 'UPDATE') THEN {'; '.join(taken)}; END IF; "
                    f"IF TG_OP IN ('INSERT', 'UPDATE') THEN {'; '.join(added)}; END IF; "
                    # A BEFORE trigger's row goes on (an AFTER trigger's answer is not read).
                    "IF TG_OP = 'DELETE' THEN RETURN OLD; END IF; RETURN NEW; END $$"
                )
            )
            update = f" OR UPDATE OF {', '.join(columns)}" if columns else ""
            timing = "BEFORE" if table in BEFORE else "AFTER"
            conn.execute(
                text(
                    f"CREATE TRIGGER counts_{table} {timing} INSERT OR DELETE{update} ON {table} "
                    f"FOR EACH ROW EXECUTE FUNCTION counts_{table}()"
                )
            )
            continue
        conn.execute(
            text(
                f"CREATE TRIGGER counts_{table}_insert AFTER INSERT ON {table} BEGIN {'; '.join(added)}; END"
            )
        )
        conn.execute(
            text(
                f"CREATE TRIGGER counts_{table}_delete AFTER DELETE ON {table} BEGIN {'; '.join(taken)}; END"
            )
        )
        if columns:
            conn.execute(
                text(
                    f"CREATE TRIGGER counts_{table}_update AFTER UPDATE OF {', '.join(columns)} ON {table} "
                    f"BEGIN {'; '.join(taken + added)}; END"
                )
            )


def drop_triggers(conn: Connection) -> None:
    """Take the triggers away (a bulk load, then ``fill``; a downgrade)."""
    for table in SHARES:
        if conn.dialect.name == "postgresql":
            conn.execute(text(f"DROP TRIGGER IF EXISTS counts_{table} ON {table}"))
            conn.execute(text(f"DROP FUNCTION IF EXISTS counts_{table}()"))
            continue
        for event in ("insert", "delete", "update"):
            conn.execute(text(f"DROP TRIGGER IF EXISTS counts_{table}_{event}"))


def fill(conn: Connection) -> None:
    """Count everything from scratch (a new table, after a bulk load)."""
    conn.execute(text("DELETE FROM counts"))
    for table, (_columns, shares) in SHARES.items():
        for name, value in shares:
            select = FILLED.get(name) or (
                f"SELECT {name.replace('R.', table + '.')}, "  # noqa: S608 (SHARES' SQL)
                f"sum({value.replace('R.', table + '.')}) FROM {table} GROUP BY 1"
            )
            conn.execute(text(f"INSERT INTO counts (name, value) {select}"))


def read(session: Session) -> dict[str, int]:
    """Every count by name (those of nothing left out)."""
    return {name: int(value) for name, value in session.execute(select(Count.name, Count.value)) if value}
