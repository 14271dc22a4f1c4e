"""One bad or vanished project never stops a sync; values too long for the database are skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from piwheels_ctl.catalog.projects import add
from piwheels_ctl.catalog.requirements import parse_wanted
from piwheels_ctl.catalog.sync import sync, sync_all
from piwheels_ctl.db.engine import Database
from piwheels_ctl.db.models import Project
from piwheels_ctl.db.models import Version as VersionRow
from piwheels_ctl.upstream.source import open_upstream

from helpers import clean_env, piwheels
from indexserver import HTML_TYPE, JSON_TYPE, IndexServer

LONG_VERSION = "1" * 300  # a valid PEP 440 version, longer than the column (128)
LONG_NAME = "a" * 300  # a valid project name, longer than the column (255)
NESTED = b"[" * 100_000 + b"]" * 100_000


def _versions(db: Database, name: str) -> list[str]:
    with db.session() as session:
        project = session.scalar(select(Project).where(Project.name == name))
        assert project is not None, f"{name} is not recorded"
        return sorted(v.version for v in project.versions)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "index"
    folder.mkdir()
    for filename in (
        "alpha-1.0.tar.gz",
        "gone-1.0.tar.gz",
        "evil-1.0.tar.gz",
        "longv-1.0.tar.gz",
        "zeta-1.0.tar.gz",
    ):
        (folder / filename).write_bytes(b"sdist")
    return folder


def test_one_bad_project_does_not_stop_the_others(db: Database, folder: Path) -> None:
    with IndexServer(folder) as index, open_upstream(index.url, timeout=10) as upstream:
        with db.session() as session:
            names = ["alpha", "gone", "evil", "longv", "zeta"]
            add(session, upstream, [parse_wanted(n, "test") for n in names])
        (folder / "gone-1.0.tar.gz").unlink()  # vanished from the upstream: 404
        index.canned["/simple/evil/"] = (200, JSON_TYPE, NESTED)
        files = [
            {"filename": f"longv-{v}.tar.gz", "url": f"/files/longv-{v}.tar.gz", "hashes": {}}
            for v in ("1.0", LONG_VERSION, "2.0")
        ]
        longv = {"meta": {"api-version": "1.1"}, "name": "longv", "files": files}
        index.canned["/simple/longv/"] = (200, JSON_TYPE, json.dumps(longv).encode())
        (folder / "alpha-2.0.tar.gz").write_bytes(b"sdist")
        (folder / "zeta-2.0.tar.gz").write_bytes(b"sdist")
        report = sync(db.session, upstream)
    problems = {p.name: p.message for p in report.problems}
    assert sorted(problems) == ["evil", "gone", "longv"], report.problems
    assert problems["gone"] == f"gone: the upstream {index.url} has no such project"
    assert problems["evil"].startswith(f"{index.url}evil/: not a project page we can read: nested too deep")
    assert "longv: a release skipped: version '1111" in problems["longv"]
    assert (report.synced, report.changed, report.new) == (3, 3, 3)
    assert _versions(db, "alpha") == ["1.0", "2.0"]
    assert _versions(db, "zeta") == ["1.0", "2.0"]
    assert _versions(db, "longv") == ["1.0", "2.0"]  # the too-long version alone was skipped
    assert _versions(db, "gone") == ["1.0"]  # kept as it was, for the operator to remove


def test_sync_all_skips_names_too_long_and_records_the_rest(db: Database, folder: Path) -> None:
    links = "".join(f'<a href="/simple/{n}/">{n}</a>\n' for n in ["alpha", LONG_NAME, "beta", "b" * 256])
    with IndexServer(folder) as index, open_upstream(index.url, timeout=10) as upstream:
        index.canned["/simple/"] = (
            200,
            HTML_TYPE,
            f"<!DOCTYPE html><html><body>{links}</body></html>".encode(),
        )
        listed = sync_all(db.session, upstream, chunk=2)
    added, problems = listed.added, [p.message for p in listed.problems]
    assert added == 2
    assert len(problems) == 2 and all("longer than 255" in p for p in problems), problems
    with db.session() as session:
        assert sorted(session.scalars(select(Project.name))) == ["alpha", "beta"]


def test_a_hostile_display_name_is_not_stored(db: Database, folder: Path) -> None:
    page = {"meta": {"api-version": "1.1"}, "name": "Alpha" + "x" * 300, "files": []}
    with IndexServer(folder) as index, open_upstream(index.url, timeout=10) as upstream:
        with db.session() as session:
            add(session, upstream, [parse_wanted("alpha", "test")])
        index.canned["/simple/alpha/"] = (200, JSON_TYPE, json.dumps(page).encode())
        report = sync(db.session, upstream)
        with db.session() as session:
            add(session, upstream, [parse_wanted("alpha", "test")])
    assert [p.message for p in report.problems] == [
        "alpha: display name kept: the new one is longer than 255"
    ]
    with db.session() as session:
        assert session.scalar(select(Project.display_name)) == "alpha"
        assert session.scalar(select(VersionRow.version)) == "1.0"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return clean_env(PIWHEELS_DATA_DIR=str(tmp_path / "data"))


def test_cli_sync_reports_a_vanished_project_and_goes_on(env: dict[str, str], folder: Path) -> None:
    with IndexServer(folder) as index:
        env = {**env, "PIWHEELS_UPSTREAM": index.url}
        piwheels(env, "init")
        piwheels(env, "add", "alpha", "gone", "zeta")
        (folder / "gone-1.0.tar.gz").unlink()
        (folder / "zeta-2.0.tar.gz").write_bytes(b"sdist")
        proc = piwheels(env, "sync")
        assert "1 project(s) changed, 1 new version(s), 1 project(s) with problems" in proc.stdout
        assert f"warning: gone: the upstream {index.url} has no such project" in proc.stderr
        assert "Traceback" not in proc.stderr
        result = json.loads(piwheels(env, "sync", "--json").stdout)
        assert result["problems"] == [
            {"project": "gone", "message": f"gone: the upstream {index.url} has no such project"}
        ]
        assert (result["changed"], result["new_versions"]) == (0, 0)
        queue = json.loads(piwheels(env, "queue", "--json").stdout)
    assert ("zeta", "2.0") in [(j["name"], j["version"]) for j in queue]


def test_cli_sync_fails_when_nothing_could_be_synced(env: dict[str, str], folder: Path) -> None:
    with IndexServer(folder) as index:
        env = {**env, "PIWHEELS_UPSTREAM": index.url}
        piwheels(env, "init")
        piwheels(env, "add", "alpha", "evil")
        index.canned["/simple/alpha/"] = (500, "text/plain", b"down")
        index.canned["/simple/evil/"] = (200, JSON_TYPE, NESTED)
        proc = piwheels(env, "sync", check=False)
    assert proc.returncode == 1, proc.stderr
    assert f"{index.url}evil/: not a project page we can read: nested too deep" in proc.stderr
    assert f"{index.url}alpha/: the upstream answered HTTP 500" in proc.stderr
    assert "error: sync: no project could be synced" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_sync_all_records_what_fits(env: dict[str, str], folder: Path) -> None:
    links = "".join(f'<a href="/simple/{n}/">{n}</a>\n' for n in ["alpha", LONG_NAME, "beta"])
    with IndexServer(folder) as index:
        env = {**env, "PIWHEELS_UPSTREAM": index.url}
        index.canned["/simple/"] = (200, HTML_TYPE, f"<html><body>{links}</body></html>".encode())
        piwheels(env, "init")
        proc = piwheels(env, "sync", "--all")
    assert "2 new project name(s) recorded" in proc.stdout
    assert "skipped: longer than 255" in proc.stderr
    assert json.loads(piwheels(env, "status", "--json").stdout)["projects"] == 2


def test_cli_add_of_a_name_too_long_is_one_clear_line(env: dict[str, str], folder: Path) -> None:
    with IndexServer(folder) as index:
        env = {**env, "PIWHEELS_UPSTREAM": index.url}
        piwheels(env, "init")
        proc = piwheels(env, "add", LONG_NAME, check=False)
        assert index.requests == []
    assert proc.returncode == 2
    assert "a project name is at most 255 characters" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
