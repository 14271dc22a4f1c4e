"""Every schema change is a migration: the migrated schema is the models' schema, and old data survives."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from piwheels_ctl.db import counts
from piwheels_ctl.db.engine import SCHEMA_HEAD, Database, alembic_config
from piwheels_ctl.db.models import Base

FIRST_SCHEMA_ROWS = [
    "INSERT INTO projects (id, name, display_name, watched, dirty) VALUES (1, 'a', 'a', true, false)",
    "INSERT INTO versions (id, project_id, version, yanked, priority) VALUES (1, 1, '1.0', false, 0)",
    "INSERT INTO abis (id, tag, python_tag, abi_tag, platform_tag, active)"
    " VALUES (1, 't', 'cp311', 'cp311', 'linux_x86_64', true)",
    "INSERT INTO builds (id, version_id, abi_id, status, started_at)"
    " VALUES (1, 1, 1, 'success', CURRENT_TIMESTAMP)",
]


def test_migrations_build_exactly_the_models_schema(db: Database) -> None:
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_upgrade_from_the_first_schema_keeps_builds(database_url: str) -> None:
    database = Database(database_url)
    try:
        command.upgrade(alembic_config(database.engine), "0001")
        with database.engine.begin() as conn:
            for statement in FIRST_SCHEMA_ROWS:
                conn.execute(text(statement))
        command.upgrade(alembic_config(database.engine), "head")
        with database.engine.connect() as conn:
            assert conn.execute(text("SELECT id, superseded FROM builds")).all() == [(1, False)]
    finally:
        database.dispose()


def test_upgrade_to_0005_keeps_builds_and_lets_wheel_only_versions_wait(database_url: str) -> None:
    database = Database(database_url)
    try:
        command.upgrade(alembic_config(database.engine), "0004")
        with database.engine.begin() as conn:
            for statement in FIRST_SCHEMA_ROWS:
                conn.execute(text(statement))
            conn.execute(text("UPDATE builds SET status = 'failed', failure_reason = 'missing-header'"))
            conn.execute(text("UPDATE versions SET skip_reason = 'binary only'"))
        command.upgrade(alembic_config(database.engine), "head")
        with database.engine.connect() as conn:
            builds = conn.execute(
                text("SELECT id, failure_reason, failure_evidence, failure_packages FROM builds")
            ).all()
            skip = conn.execute(text("SELECT skip_reason FROM versions")).scalar_one()
        assert builds == [(1, "missing-header", None, None)], builds
        assert skip is None, f"a no-sdist version stays skipped: {skip!r}"
        command.downgrade(alembic_config(database.engine), "0004")
        command.upgrade(alembic_config(database.engine), "head")
    finally:
        database.dispose()


def test_schema_head_is_the_newest_migration(db: Database) -> None:
    # Commands check the schema against SCHEMA_HEAD without loading the migration scripts.
    head = ScriptDirectory.from_config(alembic_config(db.engine)).get_current_head()
    assert head == SCHEMA_HEAD, f"the newest migration is {head}; database.SCHEMA_HEAD says {SCHEMA_HEAD}"


def test_upgrade_to_0008_fills_the_queue_and_the_counts(database_url: str) -> None:
    database = Database(database_url)
    try:
        command.upgrade(alembic_config(database.engine), "0007")
        with database.engine.begin() as conn:
            for statement in FIRST_SCHEMA_ROWS:
                conn.execute(text(statement))
            conn.execute(
                text(
                    "INSERT INTO versions (id, project_id, version, yanked, priority, sdist_url,"
                    " requires_python) VALUES (2, 1, '2.0', false, 0, 'http://x/a-2.0.tar.gz', NULL),"
                    " (3, 1, '3.0', false, 0, 'http://x/a-3.0.tar.gz', '>=3.12')"
                )
            )
        command.upgrade(alembic_config(database.engine), "head")
        with database.engine.connect() as conn:
            queue = conn.execute(text("SELECT version_id, abi_id FROM pending_pairs")).all()
            counts = dict(
                conn.execute(text("SELECT name, value FROM counts WHERE value <> 0")).tuples().all()
            )
        # 1.0 has no sdist and is built; 3.0 does not run on cp311: only 2.0 is pending.
        assert queue == [(2, 1)], queue
        # 0011 adds the projects with a page and the current builds per ABI and status.
        assert counts == {
            "projects": 1, "watched": 1, "versions": 3, "pages": 1, "builds:success": 1,
            "abi:1:success": 1,
        }, counts  # fmt: skip
        command.downgrade(alembic_config(database.engine), "0007")
        command.upgrade(alembic_config(database.engine), "head")
    finally:
        database.dispose()


LATER_SCHEMA = Path(__file__).with_name("later_schema.py")


def test_upgrade_from_the_first_schema_with_a_later_column_in_the_models(
    database_url: str, tmp_path: Path
) -> None:
    # The historic migrations run while the models (mapped in that process only) carry a column
    # that a revision after them adds: 0008 and 0011 must not read today's models or rules.
    proc = subprocess.run(
        [sys.executable, str(LATER_SCHEMA), database_url, str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["revision"] == "later"
    kept = result["kept"]
    assert [row[:2] for row in kept["abis"]] == [
        [1, "cp311-cp311-linux_armv7l"], [2, "cp312-cp312-linux_armv7l"], [3, "cp39-cp39-linux_armv7l"],
    ]  # fmt: skip
    assert [row[:3] for row in kept["projects"]] == [[1, "a", "A"], [2, "b", "b"], [3, "c", "c"]]
    assert [(row[2], row[6]) for row in kept["versions"]] == [
        ("1.0", None), ("2.0", None), ("3.0", ">=3.12"), ("4.0", None), ("1.0", None), ("0.9", None),
        ("1.0", None), ("5.0", "not a specifier"), ("6.0", ">=3.8"),
    ]  # fmt: skip
    assert kept["builds"] == [
        [1, 1, 1, "success", None], [2, 9, 1, "failed", "missing-header"], [3, 2, 2, "building", None],
    ]  # fmt: skip
    # SQLite's batch copies of builds (0002) and files (0006) must not cascade to the rows that
    # point at them: the file keeps its build, the coverage stays.
    assert [row[2:] for row in kept["files"]] == [[1, 1, 1000], [8, None, 2000]]
    assert kept["coverage"] == [[1, 1, 1], [8, 2, 2]]
    # 1.0 has no sdist; 2.0 waits for cp311 only (a build of it for cp312 is under way); 3.0
    # needs Python 3.12; 4.0 is yanked; b 1.0 was asked for, b 0.9 not; c is skipped; a broken
    # Requires-Python excludes nothing, but a wheel covers 5.0 on cp312; 6.0 failed on cp311.
    never = datetime(1, 1, 1, tzinfo=timezone.utc).isoformat()
    assert result["queue"] == [
        [2, 1, 0, "2024-01-02T03:04:05+00:00"], [3, 2, 0, never], [5, 1, 5, never], [5, 2, 5, never],
        [8, 1, 0, never], [9, 2, 0, never],
    ]  # fmt: skip
    assert result["queue"] == result["queue_today"]
    assert result["counts"] == {
        "projects": 3, "watched": 2, "versions": 9, "pages": 3, "builds:success": 1, "builds:failed": 1,
        "failed:missing-header": 1, "abi:1:success": 1, "abi:1:failed": 1, "reason:missing-header": 1,
        "files": 2, "bytes": 3000,
    }, result["counts"]  # fmt: skip
    assert result["counts"] == result["counts_today"]


def _counts_triggers(conn: Connection) -> list[tuple[str, str]]:
    """Every trigger (and on PostgreSQL its function), as the database holds them."""
    if conn.dialect.name == "postgresql":
        query = (
            "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal UNION ALL "
            "SELECT proname, prosrc FROM pg_proc WHERE proname LIKE 'counts%'"
        )
    else:
        query = "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"
    return sorted((name, " ".join(sql.split())) for name, sql in conn.execute(text(query)).tuples())


def test_the_migrated_counts_triggers_are_those_of_the_counts_module(db: Database) -> None:
    # 0008 and 0011 spell the triggers out as SQL of their own: at the newest revision they are
    # still those db/counts.py would create (a change to counts.SHARES needs a migration).
    with db.engine.begin() as conn:
        migrated = _counts_triggers(conn)
        counts.drop_triggers(conn)
        assert _counts_triggers(conn) == []
        counts.create_triggers(conn)
        assert _counts_triggers(conn) == migrated
    assert len(migrated) == (11 if db.engine.dialect.name == "sqlite" else 8)
