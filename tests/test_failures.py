"""Failed builds: builder faults bounded, the `failures` listing and `rebuild --failed-with`,
on SQLite and PostgreSQL; a real local builder whose interpreter has no pip."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from debmirror import debian_mirror
from sqlalchemy import select

from piwheels_ctl.builds.record import record_failure
from piwheels_ctl.builds.runner import Runner
from piwheels_ctl.catalog.rebuild import rebuild_failed
from piwheels_ctl.config import Settings
from piwheels_ctl.db.engine import Database
from piwheels_ctl.db.models import Abi, Build, Builder, BuildStatus, Handback, Project, Version
from piwheels_ctl.errors import InputError
from piwheels_ctl.failures.classify import Failure, classify
from piwheels_ctl.failures.failed import failed_builds
from piwheels_ctl.farm.agentcall import BuilderError
from piwheels_ctl.farm.executors import Outcome
from piwheels_ctl.queue.claims import Job, claim, pending

from helpers import clean_env, piwheels
from indexserver import IndexServer
from sdists import make_sdist

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


class FakeFaultyExecutor:
    """A fake builder (the hand-back counting is under test): each build raises BuilderError,
    except the outcomes queued in ``outcomes`` (a failed build with a canned log)."""

    def __init__(self, builder_id: int, abi_ids: list[int], work: Path) -> None:
        self.builder_id = builder_id
        self.name = "fake-faulty"
        self.slots = 1
        self.pythons = dict.fromkeys(abi_ids, "/nonexistent/python")
        self.retry_at: datetime | None = None
        self.failures = 0
        self.release = None  # no OS release: it takes no check jobs
        self.cross: dict[int, str] = {}  # no cross builds
        self.work = work
        self.outcomes: list[str] = []  # logs of builds that fail as the project's fault
        self.calls = 0

    def build(self, job: Job, build_id: int) -> Outcome:
        self.calls += 1
        if self.outcomes:
            log = self.work / f"{build_id}.log"
            log.write_text(self.outcomes.pop(0))
            return Outcome(job, build_id, {"status": "failed", "duration": 1.5}, self.work, log)
        raise BuilderError(f"fake-faulty: the builder broke (call {self.calls})")

    def finish(self, outcome: Outcome) -> None:
        outcome.log.unlink(missing_ok=True)

    def kill_all(self) -> None:
        pass

    def close(self) -> None:
        pass


def _one_job(db: Database) -> tuple[int, int, int]:
    """A watched project with one version and one ABI, and a builder: (version, ABI, builder) ids."""
    with db.session() as session:
        abi = Abi(
            tag="cp311-cp311-linux_x86_64", python_tag="cp311", abi_tag="cp311", platform_tag="linux_x86_64"
        )
        builder = Builder(name="fake-faulty", host="fake.invalid", info={})
        project = Project(name="demo", display_name="demo", watched=True)
        version = Version(version="1.0", release_time=T0, sdist_url="http://x.invalid/demo-1.0.tar.gz")
        project.versions.append(version)
        session.add_all([abi, builder, project])
        session.flush()
        return version.id, abi.id, builder.id


def _runner(db: Database, tmp_path: Path, executor: FakeFaultyExecutor) -> Runner:
    settings = Settings(
        data_dir=tmp_path / "data", build_timeout=600, builder_fault_limit=3, debian_mirror=""
    )
    return Runner(db, settings, [executor])


def _counting_builds(db: Database) -> list[tuple[BuildStatus, str | None, str | None]]:
    with db.reader() as session:
        rows = session.scalars(select(Build).where(Build.superseded.is_(False)).order_by(Build.id))
        return [(b.status, b.failure_reason, b.failure_detail) for b in rows]


def test_a_builder_fault_goes_back_until_the_limit_then_is_recorded(db: Database, tmp_path: Path) -> None:
    version_id, abi_id, builder_id = _one_job(db)
    executor = FakeFaultyExecutor(builder_id, [abi_id], tmp_path)
    for attempt in (1, 2):
        report = _runner(db, tmp_path, executor).run()
        assert (report.handed_back, report.failed, report.builder_faults) == (1, 0, []), report
        assert _counting_builds(db) == [], f"attempt {attempt} left a build: {_counting_builds(db)}"
        executor.retry_at = None  # the back-off is not under test
    with db.reader() as session:
        handback = session.get(Handback, (version_id, abi_id))
        assert handback is not None and handback.count == 2, handback
    report = _runner(db, tmp_path, executor).run()
    assert report.handed_back == 0 and report.failed == 1, report
    assert report.builder_faults == [
        ("demo==1.0 (cp311-cp311-linux_x86_64)", "fake-faulty: the builder broke (call 3)")
    ]
    assert _counting_builds(db) == [
        (BuildStatus.FAILED, "builder-fault", "fake-faulty: the builder broke (call 3)")
    ]
    with db.reader() as session:
        assert session.get(Handback, (version_id, abi_id)) is None, "the count starts again after a record"
        build = session.scalars(select(Build)).one()
        assert build.failure_evidence is not None and "3 times in a row" in build.failure_evidence
        assert list(pending(session)) == [], "a builder-fault record is not retried on its own"
    executor.retry_at = None
    assert _runner(db, tmp_path, executor).run().failed == 0
    assert executor.calls == 3, executor.calls
    # Once the builders are fixed, the operator queues them again.
    with db.session() as session:
        assert rebuild_failed(session, "builder-fault") == 1
    executor.outcomes.append("foo.c:2:10: fatal error: sql.h: No such file or directory\n")
    report = _runner(db, tmp_path, executor).run()
    assert report.failures == [("demo==1.0 (cp311-cp311-linux_x86_64)", "missing-header", "sql.h")], report


def test_a_project_failure_between_faults_resets_the_count(db: Database, tmp_path: Path) -> None:
    version_id, abi_id, builder_id = _one_job(db)
    executor = FakeFaultyExecutor(builder_id, [abi_id], tmp_path)
    for _ in (1, 2):
        _runner(db, tmp_path, executor).run()
        executor.retry_at = None
    executor.outcomes.append("error: something of the project's own\n")
    assert _runner(db, tmp_path, executor).run().failed == 1
    with db.reader() as session:
        assert session.get(Handback, (version_id, abi_id)) is None


def _failed(db: Database, version_id: int, abi_id: int, failure: Failure, tmp_path: Path) -> int:
    with db.session() as session:
        job = Job(version_id, abi_id, "demo", "1.0", "cp311-cp311-linux_x86_64", 0)
        build_id = claim(session, job, None, lease=__import__("datetime").timedelta(minutes=5)).id
    log = tmp_path / "build.log"
    log.write_text("a log\n" * 100)
    assert record_failure(db, tmp_path / "logs", build_id, failure, 12.0, log, ["unixodbc-dev"])
    return build_id


def test_failed_builds_listing_and_rebuild_failed_with(db: Database, tmp_path: Path) -> None:
    version_id, abi_id, _builder = _one_job(db)
    failure = Failure("missing-header", "sql.h", "foo.c:2:10: fatal error: sql.h: No such file or directory")
    _failed(db, version_id, abi_id, failure, tmp_path)
    with db.reader() as session:
        (build,) = failed_builds(session, tmp_path / "logs")
        assert failed_builds(session, tmp_path / "logs", reason="timeout") == []
        assert [b.name for b in failed_builds(session, tmp_path / "logs", name="Demo")] == ["demo"]
        with pytest.raises(InputError, match="nope: not a known project"):
            failed_builds(session, tmp_path / "logs", name="nope")
        with pytest.raises(InputError, match=r"--reason: 'no-such-reason' is not a failure reason"):
            failed_builds(session, tmp_path / "logs", reason="no-such-reason")
    data = build.as_json()
    assert {k: data[k] for k in ("name", "version", "abi", "reason", "detail", "packages")} == {
        "name": "demo",
        "version": "1.0",
        "abi": "cp311-cp311-linux_x86_64",
        "reason": "missing-header",
        "detail": "sql.h",
        "packages": ["unixodbc-dev"],
    }
    assert data["evidence"] == failure.evidence and data["duration"] == 12.0
    assert data["log_size"] is not None and 0 < data["log_size"] < 600, data["log_size"]
    with db.session() as session:
        with pytest.raises(InputError, match="--failed-with: 'missing-headers' is not a failure reason"):
            rebuild_failed(session, "missing-headers")
        assert rebuild_failed(session, "timeout") == 0
        assert list(pending(session)) == []
        assert rebuild_failed(session, "missing-header") == 1
        assert [(j.name, j.version, j.priority) for j in pending(session)] == [("demo", "1.0", 1)]
    with db.reader() as session:
        assert failed_builds(session, tmp_path / "logs") == [], "a rebuilt failure no longer counts"


CONTENTS = "usr/include/sql.h    libdevel/unixodbc-dev\nusr/bin/dot     graphics/graphviz\n"


def test_failures_command_looks_packages_up_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = clean_env(PIWHEELS_DATA_DIR=str(data), PIWHEELS_UPSTREAM=str(tmp_path))
    piwheels(env, "init")
    db = Database(f"sqlite:///{data / 'piwheels.db'}")
    try:
        version_id, abi_id, _builder = _one_job(db)
        build_id = _failed(
            db, version_id, abi_id, Failure("missing-program", "dot", "dot: not found"), tmp_path
        )
        with db.session() as session:
            session.get_one(Build, build_id).failure_packages = None  # as if the run had no index yet
    finally:
        db.dispose()
    with debian_mirror(tmp_path / "mirror", CONTENTS, "") as (url, asked):
        env.update(PIWHEELS_DEBIAN_MIRROR=url, PIWHEELS_DEBIAN_SUITE="bookworm")
        first = piwheels(env, "failures", "--json")
        listed = json.loads(first.stdout)
        assert [(b["name"], b["reason"], b["detail"], b["packages"]) for b in listed] == [
            ("demo", "missing-program", "dot", ["graphviz"])
        ], listed
        assert len(asked) == 2, asked
        # In a pipe too, a line says why it waits, and how not to.
        saying = [line for line in first.stderr.splitlines() if "Contents index" in line]
        assert len(saying) == 1 and "--no-hints" in saying[0] and "bookworm" in saying[0], first.stderr
        table = piwheels(env, "failures", "demo")
        assert "graphviz" in table.stdout and "missing-program" in table.stdout, table.stdout
        assert "Contents index" not in table.stderr, f"said again with the index fresh: {table.stderr}"
        assert len(asked) == 2, f"looked up again: {asked}"
    bad = piwheels(env, "failures", "--reason", "nonsense", check=False)
    assert bad.returncode != 0 and "'nonsense' is not a failure reason" in bad.stderr, bad.stderr
    both = piwheels(env, "rebuild", "demo", "--failed-with", "timeout", check=False)
    assert both.returncode != 0 and "one of them" in both.stderr, both.stderr
    assert (
        "1 build(s) that failed with missing-program queued again"
        in piwheels(env, "rebuild", "--failed-with", "missing-program").stdout
    )
    assert piwheels(env, "failures", "--json").stdout.strip() == "[]"
    assert "--no-hints" in piwheels(env, "failures", "--help").stdout


@pytest.mark.build
def test_a_builder_that_cannot_get_its_pinned_pip_is_at_fault_never_the_project(tmp_path: Path) -> None:
    # The index has the project but not the pip the builds run with (piwheels_ctl.farm.frontend).
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    make_sdist(Path(__file__).parent / "packages" / "pure-ok", upstream)
    with IndexServer(upstream) as index:
        env = clean_env(
            PIWHEELS_DATA_DIR=str(tmp_path / "data"),
            PIWHEELS_UPSTREAM=index.url,
            PIWHEELS_SLOTS="1",
            PIWHEELS_DEBIAN_MIRROR="",
        )
        piwheels(env, "init")
        piwheels(env, "add", "pure-ok")
        runs = [piwheels(env, "run") for _ in range(3)]
        listed = json.loads(piwheels(env, "failures", "--json").stdout)
    for run in runs[:2]:
        assert "1 handed back" in run.stdout and "failed 0" in run.stdout, run.stdout + run.stderr
    assert "builder-fault" in runs[2].stderr and "could not be fetched" in runs[2].stderr, runs[2].stderr
    assert [(b["name"], b["reason"]) for b in listed] == [("pure-ok", "builder-fault")], listed
    assert "could not be fetched" in listed[0]["detail"], listed[0]


# Real lines of the bookworm Contents-amd64.gz: three GTKs ship gtk/gtk.h, each in its own folder.
GTK_CONTENTS = """\
usr/include/gtk-2.0/gtk/gtk.h                           oldlibs/libgtk2.0-dev
usr/include/gtk-3.0/gtk/gtk.h                           libdevel/libgtk-3-dev
usr/include/gtk-4.0/gtk/gtk.h                           libdevel/libgtk-4-dev
"""


def test_failures_shows_why_each_package_and_the_evidence_of_a_long_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = clean_env(PIWHEELS_DATA_DIR=str(data), PIWHEELS_UPSTREAM=str(tmp_path))
    piwheels(env, "init")
    # make's one compile line of 3,000+ characters, the error at its end
    flags = " ".join(f"-I/usr/include/dep{i}" for i in range(150))
    error = "x.c:3:10: fatal error: gtk/gtk.h: No such file or directory"
    line = f"gcc {flags} -I/usr/include/gtk-3.0 -c x.c -o x.o {error}"
    text = f"running build_ext\n{line}\ncompilation terminated.\n"
    failure = classify(text)
    assert len(line) > 3000 and failure.detail == "gtk/gtk.h", failure
    db = Database(f"sqlite:///{data / 'piwheels.db'}")
    try:
        version_id, abi_id, _builder = _one_job(db)
        with db.session() as session:
            job = Job(version_id, abi_id, "demo", "1.0", "cp311-cp311-linux_x86_64", 0)
            build_id = claim(session, job, None, lease=timedelta(minutes=5)).id
        log = tmp_path / "build.log"
        log.write_text(text)
        assert record_failure(db, data / "logs", build_id, failure, 12.0, log, None)
    finally:
        db.dispose()
    with debian_mirror(tmp_path / "mirror", GTK_CONTENTS, "") as (url, _asked):
        env.update(PIWHEELS_DEBIAN_MIRROR=url, PIWHEELS_DEBIAN_SUITE="bookworm")
        listed = json.loads(piwheels(env, "failures", "--json").stdout)
        table = piwheels(env, "failures", "demo").stdout
    (build,) = listed
    assert build["packages"][0] == "libgtk-3-dev", build
    assert "the log passes -I/usr/include/gtk-3.0" in build["why"][0], build["why"]
    assert "fatal error: gtk/gtk.h: No such file or directory" in build["evidence"], build["evidence"]
    assert "install: libgtk-3-dev" in table, table
    assert "the log passes -I/usr/include/gtk-3.0" in table, table
    assert "fatal error: gtk/gtk.h" in table, table
