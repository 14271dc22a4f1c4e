"""The schema, its migrations and the column types, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError, StatementError

from piwheels_ctl.db.engine import Database, check_schema, schema_state, upgrade
from piwheels_ctl.db.models import Abi, Build, BuildStatus, File, Project, Version
from piwheels_ctl.errors import DatabaseOpenError

TABLES = {
    "abis",
    "alembic_version",
    "builder_pythons",
    "builders",
    "builds",
    "counts",
    "coverage",
    "upstream_coverage",
    "upstream_wheels",
    "files",
    "handbacks",
    "pending_pairs",
    "release_checks",
    "projects",
    "served_files",
    "versions",
}


def _tables(db: Database) -> set[str]:
    return set(inspect(db.engine).get_table_names())


def _file(version: Version, filename: str) -> File:
    return File(
        filename=filename,
        version=version,
        size=1,
        sha256="0" * 64,
        python_tag="py3",
        abi_tag="none",
        platform_tag="any",
        metadata_sha256="1" * 64,
        core_metadata="Metadata-Version: 2.1\nName: a\nVersion: 1.0\n",
    )


def test_init_creates_the_schema(database_url: str) -> None:
    db = Database(database_url)
    try:
        current, head = schema_state(db.engine)
        assert current is None
        assert _tables(db) == set()
        assert upgrade(db.engine) == (None, head)
        assert _tables(db) == TABLES
        assert schema_state(db.engine) == (head, head)
        check_schema(db.engine)
    finally:
        db.dispose()


def test_upgrade_twice_changes_nothing(db: Database) -> None:
    with db.session() as session:
        session.add(Project(name="kept", display_name="Kept"))
    _current, head = schema_state(db.engine)
    assert upgrade(db.engine) == (head, head)
    assert _tables(db) == TABLES
    with db.session() as session:
        assert session.scalars(select(Project.name)).all() == ["kept"]


def test_check_schema_refuses_an_uninitialised_database(database_url: str) -> None:
    db = Database(database_url)
    try:
        with pytest.raises(DatabaseOpenError, match="not initialised: run 'piwheels-ctl init'"):
            check_schema(db.engine)
    finally:
        db.dispose()


def test_a_schema_from_newer_code_is_refused(db: Database) -> None:
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffffffffffff'"))
    with pytest.raises(DatabaseOpenError, match=r"schema \(ffffffffffff\) is newer"):
        upgrade(db.engine)
    with pytest.raises(DatabaseOpenError, match=r"schema \(ffffffffffff\) is newer"):
        check_schema(db.engine)
    # Refusing must not have touched the stamp.
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "ffffffffffff"


def test_utc_datetimes_come_back_aware(db: Database) -> None:
    when = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=2)))
    with db.session() as session:
        session.add(Project(name="timed", display_name="timed", synced_at=when))
    with db.session() as session:
        synced_at = session.scalars(select(Project.synced_at)).one()
    assert synced_at is not None
    assert synced_at.utcoffset() == timedelta(0)
    assert synced_at == when
    assert synced_at.hour == 5


def test_naive_datetimes_are_refused(db: Database) -> None:
    with pytest.raises(StatementError, match="naive datetime"), db.session() as session:
        session.add(Project(name="naive", display_name="naive", synced_at=datetime(2024, 5, 6)))


def test_project_names_are_unique(db: Database) -> None:
    with db.session() as session:
        session.add(Project(name="twice", display_name="twice"))
    with pytest.raises(IntegrityError), db.session() as session:
        session.add(Project(name="twice", display_name="Twice"))


def test_versions_are_unique_per_project(db: Database) -> None:
    with db.session() as session:
        a, b = Project(name="a", display_name="a"), Project(name="b", display_name="b")
        session.add_all([Version(project=a, version="1.0"), Version(project=b, version="1.0")])
    with pytest.raises(IntegrityError), db.session() as session:
        project = session.scalars(select(Project).where(Project.name == "a")).one()
        session.add(Version(project=project, version="1.0"))
    with db.session() as session:
        assert len(session.scalars(select(Version)).all()) == 2


def test_file_names_are_unique(db: Database) -> None:
    with db.session() as session:
        project = Project(name="a", display_name="a")
        one, two = Version(project=project, version="1.0"), Version(project=project, version="2.0")
        session.add(_file(one, "a-1.0-py3-none-any.whl"))
    with pytest.raises(IntegrityError), db.session() as session:
        session.add(_file(two, "a-1.0-py3-none-any.whl"))


def test_build_status_is_stored_by_value(db: Database) -> None:
    with db.session() as session:
        project = Project(name="a", display_name="a")
        version = Version(project=project, version="1.0")
        abi = Abi(
            tag="cp311-cp311-linux_x86_64", python_tag="cp311", abi_tag="cp311", platform_tag="linux_x86_64"
        )
        session.add(Build(version=version, abi=abi, status=BuildStatus.SUCCESS))
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM builds")).scalar_one() == "success"
    with db.session() as session:
        assert session.scalars(select(Build.status)).one() is BuildStatus.SUCCESS
