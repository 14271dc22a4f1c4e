"""A sync costs what changed: serials from the JSON root, else conditional requests, else full pages."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from piwheels_ctl.catalog.projects import add
from piwheels_ctl.catalog.requirements import parse_wanted
from piwheels_ctl.catalog.sync import sync
from piwheels_ctl.db.engine import Database
from piwheels_ctl.db.models import Project
from piwheels_ctl.upstream.source import Upstream, open_upstream

from indexserver import JSON_TYPE, IndexServer

PROJECTS = [f"proj{i:03d}" for i in range(100)]
NESTED = b"[" * 100_000 + b"]" * 100_000


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "index"
    folder.mkdir()
    for name in PROJECTS:
        (folder / f"{name}-1.0.tar.gz").write_bytes(b"sdist")
    return folder


def _watch(db: Database, upstream: Upstream) -> None:
    with db.session() as session:
        add(session, upstream, [parse_wanted(n, "test") for n in PROJECTS])


def _release(folder: Path, name: str, version: str) -> None:
    path = folder / f"{name}-{version}.tar.gz"
    path.write_bytes(b"sdist")
    # A time of its own, so that Last-Modified (whole seconds) moves on too.
    later = time.time() + 10
    os.utime(path, (later, later))


def _projects(db: Database) -> dict[str, Project]:
    with db.reader() as session:
        return {p.name: p for p in session.scalars(select(Project))}


def _versions(db: Database, name: str) -> list[str]:
    with db.reader() as session:
        project = session.scalars(select(Project).where(Project.name == name)).one()
        return sorted(v.version for v in project.versions)


@pytest.fixture
def serial_index(folder: Path) -> Iterator[IndexServer]:
    with IndexServer(folder, serials=True) as index:
        yield index


def test_a_round_fetches_exactly_the_pages_whose_serial_changed(
    db: Database, folder: Path, serial_index: IndexServer
) -> None:
    with open_upstream(serial_index.url, timeout=10) as upstream:
        _watch(db, upstream)
        first = sync(db.session, upstream)  # no serial known yet: every page once
        assert (first.serials, first.fetched, first.problems) == (True, 100, []), first
        serial_index.requests.clear()
        second = sync(db.session, upstream)
        assert serial_index.pages_fetched() == [], "pages fetched with no serial changed"
        assert (second.fetched, second.unchanged, second.changed) == (0, 100, 0), second
        _release(folder, "proj007", "1.1")
        _release(folder, "proj042", "2.0")
        (folder / "proj099-1.0.tar.gz").unlink()  # deleted upstream: gone from the listing
        serial_index.requests.clear()
        third = sync(db.session, upstream)
    assert sorted(serial_index.pages_fetched()) == ["proj007", "proj042"], serial_index.requests
    assert [path for _, path, _ in serial_index.requests].count("/simple/") == 1
    assert (third.fetched, third.changed, third.new, third.unchanged) == (2, 2, 2, 97), third
    assert third.deleted == ["proj099"], third
    assert _versions(db, "proj007") == ["1.0", "1.1"]
    assert _versions(db, "proj042") == ["1.0", "2.0"]
    rows = _projects(db)
    assert rows["proj099"].deleted_at is not None and rows["proj099"].dirty
    assert _versions(db, "proj099") == ["1.0"], "a deleted project's versions are kept"
    assert [n for n, p in rows.items() if p.deleted_at is not None] == ["proj099"]


def test_a_project_back_upstream_is_no_longer_marked_deleted(
    db: Database, folder: Path, serial_index: IndexServer
) -> None:
    with open_upstream(serial_index.url, timeout=10) as upstream:
        _watch(db, upstream)
        (folder / "proj003-1.0.tar.gz").unlink()
        assert sync(db.session, upstream).deleted == ["proj003"]
        assert sync(db.session, upstream).deleted == [], "marked deleted twice"
        _release(folder, "proj003", "3.0")
        report = sync(db.session, upstream)
    assert _projects(db)["proj003"].deleted_at is None, report
    assert _versions(db, "proj003") == ["1.0", "3.0"]


@pytest.mark.parametrize("validator", ["etag", "last-modified"])
def test_without_serials_each_page_is_asked_for_conditionally(
    db: Database, folder: Path, validator: str
) -> None:
    with (
        IndexServer(folder, etags=validator == "etag", last_modified=validator == "last-modified") as index,
        open_upstream(index.url, timeout=10) as upstream,
    ):
        _watch(db, upstream)
        assert sync(db.session, upstream).serials is False
        _release(folder, "proj010", "1.1")
        _release(folder, "proj020", "1.1")
        index.requests.clear()
        report = sync(db.session, upstream)
    statuses = Counter(status for _, path, status in index.requests if path != "/simple/")
    assert statuses == {304: 98, 200: 2}, index.requests
    assert (report.fetched, report.changed, report.new, report.problems) == (100, 2, 2, []), report


def test_an_index_with_neither_serials_nor_validators_still_syncs(db: Database, folder: Path) -> None:
    # Like this machine's proxy: an HTML root without serials, JSON pages without ETags.
    with (
        IndexServer(folder, etags=False, json_root=False) as index,
        open_upstream(index.url, timeout=10) as upstream,
    ):
        _watch(db, upstream)
        sync(db.session, upstream)
        _release(folder, "proj001", "1.1")
        (folder / "proj002-1.0.tar.gz").unlink()  # 404 now
        index.requests.clear()
        report = sync(db.session, upstream)
    assert Counter(s for _, p, s in index.requests if p != "/simple/") == {200: 99, 404: 1}
    assert (report.serials, report.changed, report.new, report.deleted) == (False, 1, 1, ["proj002"])
    assert {p.name: p.message for p in report.problems} == {
        "proj002": f"proj002: the upstream {index.url} has no such project"
    }
    assert _versions(db, "proj001") == ["1.0", "1.1"]
    assert _projects(db)["proj002"].deleted_at is not None


def test_bad_pages_in_a_batch_are_skipped_alone(
    db: Database, folder: Path, serial_index: IndexServer
) -> None:
    with open_upstream(serial_index.url, timeout=10) as upstream:
        _watch(db, upstream)
        for name in ("proj005", "proj006", "proj050"):
            _release(folder, name, "1.1")
        serial_index.canned["/simple/proj006/"] = (200, JSON_TYPE, NESTED)
        report = sync(db.session, upstream, batch=10)
    problems = {p.name: p.message for p in report.problems}
    assert sorted(problems) == ["proj006"], report.problems
    assert "not a project page we can read" in problems["proj006"]
    assert _versions(db, "proj005") == ["1.0", "1.1"]
    assert _versions(db, "proj050") == ["1.0", "1.1"]
    assert _versions(db, "proj006") == ["1.0"]
    with open_upstream(serial_index.url, timeout=10) as upstream:
        del serial_index.canned["/simple/proj006/"]
        serial_index.requests.clear()
        again = sync(db.session, upstream)
    # Its serial was not recorded, so the next round asks for it again; the others not.
    assert serial_index.pages_fetched() == ["proj006"], serial_index.requests
    assert _versions(db, "proj006") == ["1.0", "1.1"], again
