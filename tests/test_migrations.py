"""Every schema change is a migration: the migrated schema is the models' schema, and old data survives."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

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
