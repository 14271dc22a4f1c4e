"""``publish --full`` and a build recorded while it runs agree (issue 23, attack 4): every project
the root index lists has its page on disk, whichever started first, and ``audit`` checks it."""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from packaging.utils import canonicalize_name
from sqlalchemy import select
from sqlalchemy.orm import Session
from test_audit import _farm as audit_farm
from test_publisher import add_project, add_version, add_wheel

from piwheels_ctl.builds import audit, record
from piwheels_ctl.builds.verify import inspect_wheel
from piwheels_ctl.db.engine import Database
from piwheels_ctl.db.models import Abi, Build, BuildStatus, File, Project, Version, utcnow
from piwheels_ctl.publish import publisher, simple
from piwheels_ctl.publish.publisher import publish_from, write_project_pages

from helpers import piwheels
from wheels import make_wheel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from farm import make_farm  # bench/ is not a package

# Enough projects that a full publish takes seconds (about ten on a busy 2-core machine).
PROJECTS = 2000
# The project whose first wheel is recorded during the publish: its name sorts into the first
# range of names, which the publish reads before any other.
RACER = "0-race"
# Far more than any step here takes; only reached when one side waits for the other for ever.
PATIENCE = 600.0


def _root_listing(www: Path) -> dict[str, list[str]]:
    """The canonical names each root file lists, read as pip reads them."""
    index = www / "simple"
    html = (index / "index.html").read_text("utf-8")
    data = json.loads((index / "index.json").read_bytes())
    return {
        "index.html": re.findall(r'<a href="([^"/]+)/">', html),
        "index.json": [p.get("_name") or canonicalize_name(p["name"]) for p in data["projects"]],
    }


def _listed_without_page(www: Path) -> list[str]:
    """Each project a root file lists whose page (of the same kind) is not on disk: a 404."""
    return [
        f"{root} lists {name}, {name}/{root} is missing"
        for root, names in _root_listing(www).items()
        for name in names
        if not (www / "simple" / name / root).is_file()
    ]


def _wheels_on_disk(db: Database, www: Path) -> None:
    """The farm's wheels as (sparse) files of their recorded size, so that ``audit`` has them."""
    with db.reader() as session:
        query = select(Project.name, File.filename, File.size).join(File.version).join(Project)
        for name, filename, size in session.execute(query):
            folder = www / "simple" / name
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / filename, "wb") as f:
                os.truncate(f.fileno(), size)


@pytest.fixture
def farm(db: Database, tmp_path: Path) -> Iterator[tuple[Database, Path, int]]:
    """A farm of ``PROJECTS`` projects (their wheels on disk), and a build of ``RACER``'s first version under
    way (the project has no wheel yet); the build's id."""
    www = tmp_path / "www"
    make_farm(db.engine, PROJECTS)
    _wheels_on_disk(db, www)
    with db.session() as session:
        project = Project(name=RACER, display_name=RACER, watched=True)
        abi = session.scalars(select(Abi).order_by(Abi.id)).first()
        build = Build(version=Version(project=project, version="1.0"), abi=abi, status=BuildStatus.BUILDING)
        session.add(build)
        session.flush()
        build_id = build.id
    yield db, www, build_id


def _record(db: Database, www: Path, build_id: int, tmp_path: Path) -> None:
    """The build's outcome recorded as the controller records it: one wheel."""
    dist = tmp_path / "dist"
    dist.mkdir(exist_ok=True)
    wheel = inspect_wheel(make_wheel(dist, RACER, "1.0"), name=RACER, version="1.0")
    assert record.record_success(db, www, tmp_path / "logs", build_id, [wheel], 1.0, None)


class Thread(threading.Thread):
    """A thread that keeps what its target raised, for the test to report."""

    def __init__(self, target: Callable[[], object]) -> None:
        super().__init__(target=self._run_target, args=(target,), daemon=True)
        self.failure: BaseException | None = None

    def _run_target(self, target: Callable[[], object]) -> None:
        try:
            target()
        except BaseException as exc:  # reported by finish()
            self.failure = exc

    def wait_for(self, event: threading.Event, what: str) -> None:
        """Wait until ``event`` is set, or fail at once when this thread ended without it."""
        for _ in range(int(PATIENCE * 10)):
            if event.wait(0.1):
                return
            if not self.is_alive():
                break
        raise AssertionError(f"{what} never happened: {self.failure!r}")

    def finish(self) -> None:
        self.join(PATIENCE)
        assert not self.is_alive(), "still running after the patience ran out"
        if self.failure is not None:
            raise self.failure


def _pause_the_publish_in_its_first_range(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[threading.Event, threading.Event]:
    """Make the full publish stop after reading its first range of names (where ``RACER`` is),
    before it writes that range's pages; (set when it stopped, set to let it go on)."""
    reading, resume = threading.Event(), threading.Event()
    real = publisher.publish_projects

    def paused(session: Session, index: Path, rows: Any, *args: Any) -> None:
        if not reading.is_set():
            reading.set()
            assert rows[0].name <= RACER <= rows[-1].name, f"the first range: {rows[0].name}..{rows[-1].name}"
            assert resume.wait(PATIENCE), "the publish was never let go on"
        real(session, index, rows, *args)

    monkeypatch.setattr(publisher, "publish_projects", paused)
    return reading, resume


def _check_agreement(db: Database, www: Path) -> None:
    assert RACER in _root_listing(www)["index.json"], "the build was recorded before the root was read"
    missing = _listed_without_page(www)
    assert not missing, f"{len(missing)} projects listed without a page: {missing[:10]}"
    with db.reader() as session:
        found = audit.audit(session, www)
    assert not found, f"audit after the publish: {found[:10]}"
    with db.reader() as session:
        query = select(File.filename).join(File.version).join(Project).where(Project.name == RACER)
        files = list(session.scalars(query))
    assert files == ["0_race-1.0-py3-none-any.whl"], f"the build's wheels recorded: {files}"


def test_a_build_recorded_during_a_full_publish_keeps_its_page(
    farm: tuple[Database, Path, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, www, build_id = farm
    reading, resume = _pause_the_publish_in_its_first_range(monkeypatch)
    publishing = Thread(lambda: publish_from(db, www, full=True, workers=1))
    publishing.start()
    try:
        publishing.wait_for(reading, "the publish reading its first range")
        _record(db, www, build_id, tmp_path)  # begun and committed while the publish is under way
    finally:
        resume.set()
        publishing.finish()
    _check_agreement(db, www)


def test_a_full_publish_during_the_record_of_a_build_keeps_its_page(
    farm: tuple[Database, Path, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, www, build_id = farm
    # The recorder stops in its transaction with the new page written and the rows not yet
    # committed; the publish starts and reads its first range; then the recorder commits.
    written, commit = threading.Event(), threading.Event()
    real = write_project_pages

    def paused(*args: Any) -> Callable[[], None]:
        undo = real(*args)
        written.set()
        assert commit.wait(PATIENCE), "the recorder was never let go on"
        return undo

    monkeypatch.setattr(record, "write_project_pages", paused)
    reading, resume = _pause_the_publish_in_its_first_range(monkeypatch)
    recording = Thread(lambda: _record(db, www, build_id, tmp_path))
    recording.start()
    publishing: Thread | None = None
    try:
        recording.wait_for(written, "the recorder writing the page")
        publishing = Thread(lambda: publish_from(db, www, full=True, workers=1))
        publishing.start()
        publishing.wait_for(reading, "the publish reading its first range")
        commit.set()
        recording.finish()
    finally:
        commit.set()
        resume.set()
        if publishing is not None:
            publishing.finish()
        recording.finish()
    _check_agreement(db, www)


def test_a_project_back_upstream_while_a_full_publish_runs_gets_its_page_before_the_root_lists_it(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing writes the page of a withdrawn project that a sync finds upstream again: the root's
    own snapshot does, when it lists the project though its range left it out."""
    www = tmp_path / "www"
    with db.session() as session:
        for name in ("back", "kept"):
            add_wheel(session, add_version(session, add_project(session, name), "1.0"))
        session.flush()
        session.scalars(select(Project).where(Project.name == "back")).one().deleted_at = utcnow()
    publish_from(db, www, full=True, withdraw_deleted=True)
    assert not (www / "simple" / "back" / "index.html").exists(), "the withdrawn project kept its page"
    real = simple.write_root

    def back_meanwhile(*args: Any) -> Any:
        with db.session() as session:  # the pages are written; a sync finds the project again
            back = session.scalars(select(Project).where(Project.name == "back")).one()
            back.deleted_at, back.dirty = None, True
        return real(*args)

    monkeypatch.setattr(simple, "write_root", back_meanwhile)
    publish_from(db, www, full=True, withdraw_deleted=True)
    assert _root_listing(www)["index.json"] == ["back", "kept"]
    assert not _listed_without_page(www), _listed_without_page(www)
    page = json.loads((www / "simple" / "back" / "index.json").read_bytes())
    assert [f["filename"] for f in page["files"]] == ["back-1.0-py3-none-any.whl"], page


def test_audit_finds_a_listed_project_without_its_page_and_fix_writes_it(tmp_path: Path) -> None:
    env, index = audit_farm(tmp_path)
    # As a build recorded during publish --full left it: the project dirty (audit used to pass
    # over its page then: due to be rewritten), listed by the root, its page removed.
    db = Database(f"sqlite:///{tmp_path / 'data' / 'piwheels.db'}")
    try:
        with db.session() as session:
            session.scalars(select(Project).where(Project.name == "two")).one().dirty = True
    finally:
        db.dispose()
    for page in ("index.html", "index.json"):
        (index / "two" / page).unlink()
    proc = piwheels(env, "audit", check=False)
    found = "listed-without-page: two: the root index lists it, two/index.html, two/index.json missing"
    assert proc.returncode == 1 and found in proc.stdout, proc.stdout
    fixed = piwheels(env, "audit", "--fix")
    assert "fixed: two: page written" in fixed.stdout and "no disagreement left" in fixed.stdout, fixed.stdout
    page = json.loads((index / "two" / "index.json").read_bytes())
    assert [f["filename"] for f in page["files"]] == ["two-1.0-py3-none-any.whl"], page
    assert (index / "two" / "index.html").is_file()
