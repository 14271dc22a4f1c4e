"""Publishing beside a running build: the read is one snapshot that holds no lock, and a project
marked dirty while it publishes stays dirty, on SQLite and on PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from piwheels_ctl.db.engine import Database
from piwheels_ctl.db.models import File, Project, Version
from piwheels_ctl.publish import simple
from piwheels_ctl.publish.publisher import clear_published, publish, publish_from

# Far more than the few milliseconds a write takes here; only reached when the lock is held.
PATIENCE = 120.0


def _wheel(session: Session, project: Project, version: str) -> None:
    filename = f"{project.name}-{version}-py3-none-any.whl"
    text = f"Metadata-Version: 2.1\nName: {project.name}\nVersion: {version}\n"
    session.add(
        File(
            version=Version(project=project, version=version),
            filename=filename,
            size=10,
            sha256=hashlib.sha256(filename.encode()).hexdigest(),
            python_tag="py3",
            abi_tag="none",
            platform_tag="any",
            metadata_sha256=hashlib.sha256(text.encode()).hexdigest(),
            core_metadata=text,
        )
    )
    project.dirty = True


def _project(session: Session, name: str) -> Project:
    return session.scalars(select(Project).where(Project.name == name)).one()


def _listed(www: Path, name: str) -> list[str]:
    data = json.loads((www / "simple" / name / "index.json").read_bytes())
    return [f["filename"] for f in data["files"]]


@pytest.fixture
def two(db: Database) -> None:
    with db.session() as session:
        for name in ("foo", "bar"):
            project = Project(name=name, display_name=name, watched=True)
            session.add(project)
            _wheel(session, project, "1.0")


def test_a_build_recorded_while_publishing_is_neither_blocked_nor_lost(
    db: Database, tmp_path: Path, two: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    www = tmp_path / "www"
    publishing, recorded = threading.Event(), threading.Event()
    write_project = simple.write_project

    def slow_write_project(*args: Any) -> None:
        # The publish has read what it publishes and is mid-run: the recorder gets its write in now.
        publishing.set()
        assert recorded.wait(PATIENCE), "the recorder's write waited for the publish to end"
        write_project(*args)

    monkeypatch.setattr(simple, "write_project", slow_write_project)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            publish_from(db, www)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert publishing.wait(PATIENCE), f"the publish never started: {failures}"
        with db.session() as session:  # a recorder: a new version of foo, already dirty
            _wheel(session, _project(session, "foo"), "2.0")
    finally:
        recorded.set()
        thread.join(PATIENCE)
    assert not thread.is_alive() and not failures, f"publish failed: {failures}"
    with db.reader() as session:
        dirty = {p.name: p.dirty for p in session.scalars(select(Project))}
    assert dirty == {"foo": True, "bar": False}, f"dirty flags after the publish: {dirty}"
    monkeypatch.undo()
    publish_from(db, www)
    assert _listed(www, "foo") == ["foo-1.0-py3-none-any.whl", "foo-2.0-py3-none-any.whl"]
    with db.reader() as session:
        assert not session.scalars(select(Project.name).where(Project.dirty)).all()


def test_marking_dirty_is_written_even_when_the_row_already_shows_it(db: Database, two: None) -> None:
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    with db.session() as session:
        foo = _project(session, "foo")
        assert foo.dirty
        event.listen(db.engine, "before_cursor_execute", seen)
        try:
            foo.dirty = True
            session.flush()
        finally:
            event.remove(db.engine, "before_cursor_execute", seen)
    updates = [s for s in statements if s.lstrip().upper().startswith("UPDATE PROJECTS")]
    assert len(updates) == 1, f"statements sent: {statements}"
    assert "dirty=" in updates[0].replace(" ", "") and "dirty_generation" in updates[0], updates[0]


def test_a_mark_from_an_older_snapshot_survives_the_clear(db: Database, two: None, tmp_path: Path) -> None:
    if db.engine.dialect.name == "sqlite":
        pytest.skip("SQLite: a write transaction holds the write lock from BEGIN, so it cannot interleave")
    with db.reader() as reading:
        result = publish(reading, tmp_path / "www")
    with db.session() as recorder:
        foo = _project(recorder, "foo")
        assert foo.dirty  # this snapshot still shows the flag ...
        with db.session() as publisher_session:  # ... which the publisher clears and commits now
            clear_published(publisher_session, result.published)
        foo.dirty = True  # and the recorder marks it dirty on top of its older snapshot
    with db.reader() as session:
        dirty = {p.name: p.dirty for p in session.scalars(select(Project))}
    assert dirty == {"foo": True, "bar": False}, f"dirty flags: {dirty}"
