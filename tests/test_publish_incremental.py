"""Publishing costs what changed: the root index is patched, not re-rendered; a full publish goes
a chunk at a time, in transactions of its own; projects deleted upstream are withdrawn on request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from test_publisher import add_project, add_version, add_wheel, age, untouched

from piwheels_ctl.db import batches
from piwheels_ctl.db.engine import Database
from piwheels_ctl.db.models import Project, utcnow
from piwheels_ctl.publish import publisher
from piwheels_ctl.publish.publisher import publish_from


def _with_wheel(db: Database, name: str, display: str | None = None, version: str = "1.0") -> None:
    with db.session() as session:
        project = session.scalars(select(Project).where(Project.name == name)).one_or_none()
        project = project or add_project(session, name, display)
        add_wheel(session, add_version(session, project, version))


def _root(www: Path) -> tuple[str, list[str]]:
    simple = www / "simple"
    names = [p["name"] for p in json.loads((simple / "index.json").read_bytes())["projects"]]
    return (simple / "index.html").read_text("utf-8"), names


def _listed(db: Database) -> dict[str, str | None]:
    with db.reader() as session:
        return dict(session.execute(select(Project.name, Project.listed_name)).tuples().all())


def test_the_root_is_patched_to_what_a_full_publish_writes(db: Database, tmp_path: Path) -> None:
    www = tmp_path / "www"
    for name in ("b", "d", "f"):
        _with_wheel(db, name, name.upper())
    publish_from(db, www)
    root = www / "simple" / "index.html"
    age([root])
    _with_wheel(db, "d", version="2.0")  # one more wheel of a listed project: the root stays
    result = publish_from(db, www)
    assert (result.projects_written, result.root_written) == (1, False)
    assert untouched(root), "the root was rewritten for a project it already listed"
    _with_wheel(db, "a", "A")  # before the first line
    _with_wheel(db, "e", 'E<"&>')  # between two, escaped
    _with_wheel(db, "g", "G")  # after the last
    with db.session() as session:  # and one that no longer has a file goes
        b = session.scalars(select(Project).where(Project.name == "b")).one()
        for version in b.versions:
            version.files.clear()
        b.dirty = True
    assert publish_from(db, www).root_written
    html, names = _root(www)
    assert names == ["A", "D", 'E<"&>', "F", "G"], names
    assert '<a href="e/">E&lt;&#34;&amp;&gt;</a>' in html and "b/" not in html
    assert _listed(db) == {"a": "A", "b": None, "d": "D", "e": 'E<"&>', "f": "F", "g": "G"}
    patched = {p: (www / "simple" / p).read_bytes() for p in ("index.html", "index.json")}
    assert not publish_from(db, www, full=True).root_written, "the patched root differs from a whole one"
    assert {p: (www / "simple" / p).read_bytes() for p in patched} == patched


def test_a_root_in_an_older_form_is_written_whole(db: Database, tmp_path: Path) -> None:
    www = tmp_path / "www"
    _with_wheel(db, "a")
    publish_from(db, www)
    # As piwheels-ctl wrote it before: the JSON root on one line.
    (www / "simple" / "index.json").write_text('{"meta":{"api-version":"1.1"},"projects":[{"name":"a"}]}')
    _with_wheel(db, "b")
    assert publish_from(db, www).root_written
    assert _root(www)[1] == ["a", "b"]
    assert (www / "simple" / "index.json").read_text().count("\n") == 4


def test_a_full_publish_commits_a_chunk_at_a_time(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("p1", "p2", "p3"):
        _with_wheel(db, name)
    monkeypatch.setattr(batches, "BATCH", 1)
    seen: list[dict[str, bool]] = []
    real = publisher.publish_projects

    def spy(*args: Any) -> None:
        # A writer gets in between chunks, and sees the chunks before already cleared.
        with db.session() as session:
            seen.append({p.name: p.dirty for p in session.scalars(select(Project).order_by(Project.name))})
        real(*args)

    monkeypatch.setattr(publisher, "publish_projects", spy)
    publish_from(db, tmp_path / "www", full=True)
    assert seen == [
        {"p1": True, "p2": True, "p3": True},
        {"p1": False, "p2": True, "p3": True},
        {"p1": False, "p2": False, "p3": True},
    ], seen


@pytest.mark.parametrize("withdraw", [False, True])
def test_a_project_deleted_upstream_is_withdrawn_only_when_asked(
    db: Database, tmp_path: Path, withdraw: bool
) -> None:
    www = tmp_path / "www"
    _with_wheel(db, "gone")
    _with_wheel(db, "kept")
    publish_from(db, www, withdraw_deleted=withdraw)
    with db.session() as session:
        gone = session.scalars(select(Project).where(Project.name == "gone")).one()
        gone.deleted_at = utcnow()
        gone.dirty = True
    publish_from(db, www, withdraw_deleted=withdraw)
    names = _root(www)[1]
    page = www / "simple" / "gone" / "index.html"
    if withdraw:
        assert names == ["kept"] and not page.exists(), names
        assert (www / "simple" / "gone").is_dir(), "the wheels' folder stays"
    else:
        assert names == ["gone", "kept"] and page.exists(), names
    assert publish_from(db, www, full=True, withdraw_deleted=withdraw).root_written is False


def test_a_list_of_projects_is_written_only_when_one_of_its_projects_gets_a_page(
    db: Database, tmp_path: Path
) -> None:
    www = tmp_path / "www"
    _with_wheel(db, "apple")
    publish_from(db, www)
    lists = {first: www / "project" / f"index-{first}.html" for first in ("0", "a", "b", "z")}
    assert all(page.exists() for page in lists.values()), "a list missing after the first publish"
    age(list(lists.values()))
    _with_wheel(db, "apple", version="2.0")
    publish_from(db, www)
    assert all(untouched(p) for p in lists.values()), "a list of projects rewritten for a new wheel"
    _with_wheel(db, "banana", "Banana")
    _with_wheel(db, "7zip")
    publish_from(db, www)
    rewritten = sorted(first for first, page in lists.items() if not untouched(page))
    assert rewritten == ["0", "b"], rewritten
    assert '<a href="banana/">Banana</a>' in lists["b"].read_text()
    assert '<a href="7zip/">7zip</a>' in lists["0"].read_text()
    assert "banana" not in lists["a"].read_text() and "apple" in lists["a"].read_text()
    assert "No project with a page starts with Z." in lists["z"].read_text()
