"""The publisher writes a PEP 503/691/658 index from the database, only what changed, atomically."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests
from pypi_simple import ACCEPT_HTML_ONLY, ACCEPT_JSON_ONLY, IndexPage, ProjectPage
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from piwheels_ctl.db.engine import Database, upgrade
from piwheels_ctl.db.models import File, Project, Version
from piwheels_ctl.publish import stats
from piwheels_ctl.publish.publisher import publish_from

from helpers import PIWHEELS, clean_env, serving

OLD = 1_000_000_000  # an mtime far in the past: a rewrite shows as a newer one


@pytest.fixture
def www(tmp_path: Path) -> Path:
    return tmp_path / "www"


@pytest.fixture
def index_url(www: Path) -> Iterator[str]:
    www.mkdir(exist_ok=True)
    with serving(www) as base:
        yield f"{base}/simple/"


def metadata_text(name: str, version: str) -> str:
    # Non-ASCII and a blank-line body: the file must hold exactly these UTF-8 bytes.
    return (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        "Author: Zoë Ångström\n\nA description → with arrows.\n"
    )


def add_project(session: Session, name: str, display_name: str | None = None) -> Project:
    project = Project(name=name, display_name=display_name or name)
    session.add(project)
    return project


def add_version(
    session: Session, project: Project, version: str, *, yanked: bool = False, reason: str | None = None
) -> Version:
    row = Version(project=project, version=version, yanked=yanked, yanked_reason=reason)
    session.add(row)
    return row


def add_wheel(
    session: Session,
    version: Version,
    tag: str = "py3-none-any",
    *,
    requires_python: str | None = None,
) -> File:
    dist = version.project.name.replace("-", "_")
    filename = f"{dist}-{version.version}-{tag}.whl"
    text = metadata_text(version.project.name, version.version)
    python_tag, abi_tag, platform_tag = tag.split("-")
    row = File(
        version=version,
        filename=filename,
        size=1000 + len(filename),
        sha256=hashlib.sha256(filename.encode()).hexdigest(),
        python_tag=python_tag,
        abi_tag=abi_tag,
        platform_tag=platform_tag,
        requires_python=requires_python,
        metadata_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        core_metadata=text,
        uploaded_at=datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc),
    )
    session.add(row)
    version.project.dirty = True
    return row


def age(paths: list[Path]) -> None:
    for path in paths:
        os.utime(path, ns=(OLD * 10**9, OLD * 10**9))


def untouched(path: Path) -> bool:
    return path.stat().st_mtime_ns == OLD * 10**9


def all_files(www: Path) -> list[Path]:
    return sorted(p for p in www.rglob("*") if p.is_file())


@pytest.fixture
def two_projects(db: Database) -> None:
    """``foo``: 1.9 (requires >=3.8), 1.10 (yanked with a reason), 2.0 (yanked, no reason);
    ``bar-baz`` (shown as Bar_Baz): one compiled wheel."""
    with db.session() as session:
        foo = add_project(session, "foo", "Foo")
        add_wheel(session, add_version(session, foo, "1.9"), requires_python=">=3.8")
        add_wheel(session, add_version(session, foo, "1.10", yanked=True, reason="broken <b>"))
        add_wheel(session, add_version(session, foo, "2.0", yanked=True))
        add_version(session, foo, "0.1")  # no files: not listed among versions
        bar = add_project(session, "bar-baz", "Bar_Baz")
        add_wheel(session, add_version(session, bar, "1.0"), "cp311-cp311-linux_armv7l")


def run_publish(db: Database, www: Path, *, full: bool = False) -> tuple[int, bool]:
    result = publish_from(db, www, full=full)
    return result.projects_written, result.root_written


def test_project_pages_parse_as_pep_503_and_691(
    db: Database, www: Path, two_projects: None, index_url: str
) -> None:
    assert run_publish(db, www) == (2, True)
    with db.session() as session:
        files = {f.filename: f for f in session.scalars(select(File))}
    for accept in (ACCEPT_JSON_ONLY, ACCEPT_HTML_ONLY):
        response = requests.get(index_url + "foo/", headers={"Accept": accept}, timeout=10)
        response.raise_for_status()
        page = ProjectPage.from_response(response, "foo")
        assert [p.filename for p in page.packages] == [
            "foo-1.9-py3-none-any.whl",
            "foo-1.10-py3-none-any.whl",
            "foo-2.0-py3-none-any.whl",
        ], accept
        by_name = {p.filename: p for p in page.packages}
        for filename, package in by_name.items():
            assert package.url == index_url + "foo/" + filename
            assert package.digests == {"sha256": files[filename].sha256}
            assert package.metadata_digests == {"sha256": files[filename].metadata_sha256}
            assert package.has_metadata is True
        assert by_name["foo-1.9-py3-none-any.whl"].requires_python == ">=3.8"
        assert by_name["foo-1.10-py3-none-any.whl"].requires_python is None
        assert not by_name["foo-1.9-py3-none-any.whl"].is_yanked
        assert by_name["foo-1.10-py3-none-any.whl"].is_yanked
        assert by_name["foo-1.10-py3-none-any.whl"].yanked_reason == "broken <b>"
        assert by_name["foo-2.0-py3-none-any.whl"].is_yanked
        # Every advertised metadata file is there, and its hash is the one advertised.
        for package in by_name.values():
            metadata = requests.get(package.metadata_url, timeout=10)
            assert metadata.status_code == 200
            digest = hashlib.sha256(metadata.content).hexdigest()
            assert digest == files[package.filename].metadata_sha256

        root = IndexPage.from_response(requests.get(index_url, headers={"Accept": accept}, timeout=10))
        assert root.projects == ["Bar_Baz", "Foo"]


def test_project_json_fields(db: Database, www: Path, two_projects: None) -> None:
    run_publish(db, www)
    data = json.loads((www / "simple" / "foo" / "index.json").read_bytes())
    assert data["meta"] == {"api-version": "1.1"}
    assert data["name"] == "foo"
    assert data["versions"] == ["1.9", "1.10", "2.0"]  # by version, not by string
    first, second, third = data["files"]
    assert first["url"] == first["filename"] == "foo-1.9-py3-none-any.whl"
    assert first["size"] == 1000 + len(first["filename"])
    assert first["upload-time"] == "2024-01-02T03:04:05.678901Z"
    assert first["requires-python"] == ">=3.8"
    assert first["yanked"] is False
    assert second["yanked"] == "broken <b>"
    assert third["yanked"] is True
    assert "dist-info-metadata" not in first, "PEP 714: old pips crash on it in JSON"
    assert set(first["core-metadata"]) == {"sha256"}
    root = json.loads((www / "simple" / "index.json").read_bytes())
    assert root == {
        "meta": {"api-version": "1.1"},
        "projects": [{"name": "Bar_Baz"}, {"name": "Foo"}],
    }


def test_metadata_files_are_byte_identical(db: Database, www: Path, two_projects: None) -> None:
    run_publish(db, www)
    with db.session() as session:
        files = session.scalars(select(File)).all()
        assert len(files) == 4
        for f in files:
            path = www / "simple" / f.version.project.name / f"{f.filename}.metadata"
            assert path.read_bytes() == f.core_metadata.encode("utf-8")
            assert hashlib.sha256(path.read_bytes()).hexdigest() == f.metadata_sha256


def test_html_escapes_attribute_values_and_names(db: Database, www: Path) -> None:
    with db.session() as session:
        project = add_project(session, "esc", 'Esc<"&>')
        add_wheel(
            session,
            add_version(session, project, "1.0", yanked=True, reason='a "quoted" <reason> & more'),
            requires_python=">=3.8,<4",
        )
    run_publish(db, www)
    page = (www / "simple" / "esc" / "index.html").read_text("utf-8")
    assert 'data-requires-python="&gt;=3.8,&lt;4"' in page
    assert 'data-yanked="a &#34;quoted&#34; &lt;reason&gt; &amp; more"' in page
    assert "Links for Esc&lt;&#34;&amp;&gt;" in page
    assert "<reason>" not in page
    root = (www / "simple" / "index.html").read_text("utf-8")
    assert '<a href="esc/">Esc&lt;&#34;&amp;&gt;</a>' in root


def test_yanked_without_reason_is_an_empty_attribute(db: Database, www: Path, two_projects: None) -> None:
    run_publish(db, www)
    page = (www / "simple" / "foo" / "index.html").read_text("utf-8")
    line = next(line for line in page.splitlines() if "foo-2.0-" in line)
    assert 'data-yanked=""' in line
    line = next(line for line in page.splitlines() if "foo-1.9-" in line)
    assert "data-yanked" not in line


def test_only_dirty_projects_are_rewritten(db: Database, www: Path, two_projects: None) -> None:
    run_publish(db, www)
    simple = www / "simple"
    pages = all_files(www)
    age(pages)
    assert run_publish(db, www) == (0, False)
    assert [p for p in pages if not untouched(p)] == []

    with db.session() as session:
        foo = session.scalars(select(Project).where(Project.name == "foo")).one()
        new = add_wheel(session, add_version(session, foo, "3.0"), requires_python=">=3.9")
    assert run_publish(db, www) == (1, False)
    assert not untouched(simple / "foo" / "index.html")
    assert not untouched(simple / "foo" / "index.json")
    assert (simple / "foo" / f"{new.filename}.metadata").exists()
    # The other project, the root listing and existing metadata files keep their mtimes.
    assert untouched(simple / "bar-baz" / "index.html")
    assert untouched(simple / "bar-baz" / "index.json")
    assert untouched(simple / "index.html")
    assert untouched(simple / "index.json")
    assert untouched(simple / "foo" / "foo-1.9-py3-none-any.whl.metadata")
    with db.session() as session:
        assert not session.scalars(select(Project).where(Project.dirty)).all()


def test_dirty_project_with_same_content_keeps_its_files(db: Database, www: Path, two_projects: None) -> None:
    run_publish(db, www)
    pages = all_files(www)
    age(pages)
    with db.session() as session:
        for project in session.scalars(select(Project)):
            project.dirty = True
    assert run_publish(db, www) == (2, False)
    assert [p for p in pages if not untouched(p)] == []


def test_new_project_rewrites_root(db: Database, www: Path, two_projects: None) -> None:
    run_publish(db, www)
    root = www / "simple" / "index.html"
    age([root])
    with db.session() as session:
        add_wheel(session, add_version(session, add_project(session, "new"), "1.0"))
        add_project(session, "no-files-yet")  # dirty, but nothing to list
    assert run_publish(db, www) == (2, True)
    assert not untouched(root)
    assert '<a href="new/">new</a>' in root.read_text("utf-8")
    assert "no-files-yet" not in root.read_text("utf-8")
    assert not (www / "simple" / "no-files-yet").exists()


def test_project_without_files_is_removed(db: Database, www: Path, two_projects: None) -> None:
    run_publish(db, www)
    project_dir = www / "simple" / "bar-baz"
    wheel = project_dir / "bar_baz-1.0-cp311-cp311-linux_armv7l.whl"
    wheel.write_bytes(b"the recorder's wheel")
    with db.session() as session:
        bar = session.scalars(select(Project).where(Project.name == "bar-baz")).one()
        for version in bar.versions:
            version.files.clear()
        bar.dirty = True
    assert run_publish(db, www) == (1, True)
    assert sorted(p.name for p in project_dir.iterdir()) == [wheel.name]
    root = (www / "simple" / "index.html").read_text("utf-8")
    assert "bar-baz/" not in root
    assert "foo/" in root
    root_json = json.loads((www / "simple" / "index.json").read_bytes())
    assert root_json["projects"] == [{"name": "Foo"}]


def test_stale_metadata_files_are_removed(db: Database, www: Path, two_projects: None) -> None:
    run_publish(db, www)
    foo_dir = www / "simple" / "foo"
    assert (foo_dir / "foo-2.0-py3-none-any.whl.metadata").exists()
    with db.session() as session:
        foo = session.scalars(select(Project).where(Project.name == "foo")).one()
        session.delete(next(v for v in foo.versions if v.version == "2.0"))
        foo.dirty = True
    run_publish(db, www)
    assert not (foo_dir / "foo-2.0-py3-none-any.whl.metadata").exists()
    assert (foo_dir / "foo-1.9-py3-none-any.whl.metadata").exists()
    assert "foo-2.0-" not in (foo_dir / "index.html").read_text("utf-8")


def test_wrong_metadata_file_is_replaced(db: Database, www: Path, two_projects: None) -> None:
    run_publish(db, www)
    path = www / "simple" / "foo" / "foo-1.9-py3-none-any.whl.metadata"
    path.write_bytes(b"truncated")
    with db.session() as session:
        session.scalars(select(Project).where(Project.name == "foo")).one().dirty = True
    run_publish(db, www)
    assert path.read_bytes() == metadata_text("foo", "1.9").encode("utf-8")


def test_full_publish_restores_clean_projects(db: Database, www: Path, two_projects: None) -> None:
    run_publish(db, www)
    (www / "simple" / "bar-baz" / "index.json").unlink()
    (www / "simple" / "index.html").write_text("damaged")
    assert run_publish(db, www) == (0, False)
    assert not (www / "simple" / "bar-baz" / "index.json").exists()
    assert run_publish(db, www, full=True) == (2, True)
    assert (www / "simple" / "bar-baz" / "index.json").exists()
    assert "bar-baz/" in (www / "simple" / "index.html").read_text("utf-8")


def test_full_publish_removes_pages_of_unknown_projects(db: Database, www: Path, two_projects: None) -> None:
    run_publish(db, www)
    with db.session() as session:
        session.delete(session.scalars(select(Project).where(Project.name == "bar-baz")).one())
    gone = www / "simple" / "bar-baz"
    wheel = gone / "bar_baz-1.0-cp311-cp311-linux_armv7l.whl"
    wheel.write_bytes(b"not the publisher's to delete")
    assert run_publish(db, www) == (0, False)  # nothing dirty: nothing looked at
    assert (gone / "index.html").exists()
    assert run_publish(db, www, full=True) == (1, True)
    assert sorted(p.name for p in gone.iterdir()) == [wheel.name]
    assert (www / "simple" / "foo" / "index.html").exists()


def test_empty_database_still_gets_a_root(db: Database, www: Path) -> None:
    assert run_publish(db, www) == (0, True)
    assert json.loads((www / "simple" / "index.json").read_bytes())["projects"] == []
    assert run_publish(db, www) == (0, False)


def test_writes_are_atomic_and_readable(db: Database, www: Path, two_projects: None) -> None:
    run_publish(db, www)
    written = all_files(www)
    assert not [p for p in written if p.name.startswith(".")]
    assert {str(p): oct(p.stat().st_mode & 0o777) for p in written if p.stat().st_mode & 0o777 != 0o644} == {}
    # A write that cannot be renamed into place fails without leaving its temp file behind.
    target = www / "simple" / "foo" / "index.json"
    target.unlink()
    target.mkdir()
    with db.session() as session:
        session.scalars(select(Project).where(Project.name == "foo")).one().dirty = True
    with pytest.raises(IsADirectoryError):
        run_publish(db, www)
    assert [p.name for p in (www / "simple" / "foo").iterdir() if p.name.startswith(".")] == []
    with db.session() as session:  # the failed run's transaction rolled back
        assert session.scalars(select(Project).where(Project.name == "foo")).one().dirty


def test_many_projects(db: Database, www: Path) -> None:
    """More projects than one query chunk holds: every one is published, in few queries."""
    with db.session() as session:
        for n in range(600):
            add_wheel(session, add_version(session, add_project(session, f"p{n}"), "1.0"))
    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        assert run_publish(db, www) == (600, True)
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    # Not one query per project: a handful per chunk of 500 for the index, as many for the
    # project pages, and a dozen for the front page and the statistics.
    assert len(statements) < 45, statements
    assert len(json.loads((www / "simple" / "index.json").read_bytes())["projects"]) == 600
    assert (www / "simple" / "p599" / "p599-1.0-py3-none-any.whl.metadata").exists()


def test_a_full_publish_in_worker_processes_writes_what_one_process_writes(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three chunks of projects in two worker processes: the same files, byte for byte. The
    front pages say when they were published, to the minute: both publishes say the same time
    (under load, one minute could end between them)."""
    published = stats.utcnow()
    monkeypatch.setattr(stats, "utcnow", lambda: published)
    with db.session() as session:
        for n in range(1100):
            project = add_project(session, f"p{n:04d}", f"P{n:04d}")
            add_wheel(session, add_version(session, project, "1.0"))
            if n % 3 == 0:
                add_wheel(session, add_version(session, project, "2.0"), "cp311-cp311-linux_armv7l")
            if n % 7 == 0:
                add_version(session, project, "3.0")  # no files
    trees = {}
    for workers in (1, 2):
        www = tmp_path / f"www-{workers}"
        result = publish_from(db, www, full=True, workers=workers)
        assert (result.projects_written, result.root_written) == (1100, True), (workers, result)
        trees[workers] = {str(p.relative_to(www)): p.read_bytes() for p in all_files(www)}
    assert len(trees[1]) > 4400, len(trees[1])
    assert trees[2].keys() == trees[1].keys(), sorted(trees[2].keys() ^ trees[1].keys())[:10]
    differ = [name for name in trees[1] if trees[1][name] != trees[2][name]]
    assert not differ, differ[:10]


def _stat(pid: int) -> tuple[str, int, bytes] | None:
    """A process's state, parent and command line; None when it is gone (or only a zombie)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return None if fields[0] == "Z" else (fields[0], int(fields[1]), cmdline)


def _workers(parent: int) -> list[int]:
    """The multiprocessing workers whose parent is ``parent``."""
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    return [pid for pid in pids if (st := _stat(pid)) and st[1] == parent and b"spawn_main" in st[2]]


def _full_publish_with_two_workers(tmp_path: Path) -> tuple[subprocess.Popen[str], list[int]]:
    """``publish --full`` of 6,000 projects (12 chunks) with two workers, and their pids."""
    data = tmp_path / "data"
    data.mkdir()
    db = Database(f"sqlite:///{data / 'piwheels.db'}")
    upgrade(db.engine)
    with db.session() as session:
        for n in range(6000):
            add_wheel(session, add_version(session, add_project(session, f"p{n:04d}"), "1.0"))
    db.dispose()
    env = clean_env(PIWHEELS_DATA_DIR=str(data), PIWHEELS_LOCAL_BUILDER="false", PIWHEELS_PUBLISH_WORKERS="2")
    proc = subprocess.Popen([str(PIWHEELS), "publish", "--full"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)  # fmt: skip
    workers: list[int] = []
    deadline = time.monotonic() + 120
    while len(workers) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        workers = _workers(proc.pid)
    if len(workers) < 2:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"no two workers seen (publish ended: {proc.returncode}): {workers}\n{out}{err}")
    return proc, workers


def test_the_workers_of_a_killed_full_publish_end_too(tmp_path: Path) -> None:
    proc, workers = _full_publish_with_two_workers(tmp_path)
    proc.kill()
    proc.communicate()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(_stat(pid) for pid in workers):
        time.sleep(0.1)
    left = [pid for pid in workers if _stat(pid)]
    assert not left, f"workers still running after their publish was killed: {left}"


def test_a_full_publish_whose_worker_dies_says_so(tmp_path: Path) -> None:
    proc, workers = _full_publish_with_two_workers(tmp_path)
    os.kill(workers[0], 9)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, (proc.returncode, out, err)
    assert "a worker process ended abruptly" in err and "Traceback" not in err, err
    assert not [pid for pid in workers if _stat(pid)], "a worker outlived its publish"


def make_wheel(path: Path, name: str, version: str, metadata: str) -> bytes:
    """A minimal, valid pure-Python wheel whose METADATA is ``metadata``."""
    dist_info = f"{name}-{version}.dist-info"
    members = {
        f"{name}/__init__.py": b"",
        f"{dist_info}/METADATA": metadata.encode("utf-8"),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = "".join(f"{member},,\n" for member in [*members, f"{dist_info}/RECORD"])
    with zipfile.ZipFile(path, "w") as wheel:
        for member, data in members.items():
            wheel.writestr(member, data)
        wheel.writestr(f"{dist_info}/RECORD", record)
    return path.read_bytes()


@pytest.mark.parametrize("installer", ["pip", "uv"])
def test_pip_and_uv_install_from_the_published_index(
    db: Database,
    www: Path,
    index_url: str,
    tmp_path: Path,
    installer: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """pip and uv check the wheel's and the metadata file's hashes against the index."""
    caplog.set_level(logging.INFO, logger="piwheels_ctl.publish.server")
    text = metadata_text("tiny-pkg", "1.0").replace("Name: tiny-pkg", "Name: tiny_pkg")
    project_dir = www / "simple" / "tiny-pkg"
    project_dir.mkdir(parents=True)
    data = make_wheel(project_dir / "tiny_pkg-1.0-py3-none-any.whl", "tiny_pkg", "1.0", text)
    with db.session() as session:
        version = add_version(session, add_project(session, "tiny-pkg", "tiny_pkg"), "1.0")
        row = add_wheel(session, version)
        row.sha256 = hashlib.sha256(data).hexdigest()
        row.size = len(data)
        row.requires_python = ">=3.8"
    run_publish(db, www)
    env = {**os.environ, "PIP_CONFIG_FILE": "/dev/null", "UV_NO_CONFIG": "1"}
    if installer == "pip":
        command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check"]
        command += ["--no-cache-dir", "--target", str(tmp_path / "target")]
    else:
        command = [str(Path(sys.executable).parent / "uv"), "pip", "install", "--no-cache"]
        command += ["--target", str(tmp_path / "target"), "--python", sys.executable]
    command += ["--index-url", index_url, "tiny-pkg==1.0"]
    subprocess.run(command, check=True, env=env, capture_output=True, timeout=120)
    assert (tmp_path / "target" / "tiny_pkg" / "__init__.py").exists()

    # The server logs each request just after answering it: give its thread a moment.
    def requests() -> list[str]:  # the server's own lines, whatever else was logged meanwhile
        return [r.getMessage() for r in caplog.records if r.name == "piwheels_ctl.publish.server"]

    deadline = time.monotonic() + 10
    while len(requests()) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    requested = requests()
    # The installer read the core metadata from its .metadata file (PEP 658) before the wheel.
    assert [line.split('"')[1] for line in requested if '"' in line] == [
        "GET /simple/tiny-pkg/",
        "GET /simple/tiny-pkg/tiny_pkg-1.0-py3-none-any.whl.metadata",
        "GET /simple/tiny-pkg/tiny_pkg-1.0-py3-none-any.whl",
    ]
