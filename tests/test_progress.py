"""What `run` shows while it builds: a line per build in progress (builder, project==version, ABI,
elapsed), from the runner's ``started`` callback, gone when the build ends; and the real command
showing the first build's name while that build runs."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import shutil
import subprocess
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from rich.console import Console

from piwheels_ctl.builds.runner import Progress, Runner, RunReport
from piwheels_ctl.cli.building import BarProgress
from piwheels_ctl.config import Settings
from piwheels_ctl.db.engine import Database
from piwheels_ctl.db.models import Abi, Builder, Project, Version
from piwheels_ctl.farm.executors import Outcome
from piwheels_ctl.queue.claims import Job

from helpers import PIWHEELS, clean_env, piwheels
from indexserver import IndexServer

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
ABI = "cp311-cp311-linux_x86_64"
WAIT = 30.0  # seconds to wait for a thread that should be there in milliseconds


class FakeBlockingExecutor:
    """A fake builder (what the runner tells the progress is under test): each build waits for
    ``let_go`` to be set, then fails with a canned log."""

    def __init__(self, builder_id: int, abi_id: int, work: Path) -> None:
        self.builder_id = builder_id
        self.name = "fake-blocking"
        self.slots = 2
        self.pythons = {abi_id: "/nonexistent/python"}
        self.retry_at: datetime | None = None
        self.failures = 0
        self.work = work
        self.release: str | None = None  # no OS release: it takes no check jobs
        self.cross: dict[int, str] = {}  # no cross builds
        self.let_go = threading.Event()
        self.entered = threading.Semaphore(0)

    def build(self, job: Job, build_id: int) -> Outcome:
        self.entered.release()
        assert self.let_go.wait(WAIT), "the test never released the build"
        log = self.work / f"{build_id}.log"
        log.write_text("error: fake build failure\n")
        return Outcome(job, build_id, {"status": "failed", "duration": 0.1}, self.work, log)

    def finish(self, outcome: Outcome) -> None:
        outcome.log.unlink(missing_ok=True)

    def kill_all(self) -> None:
        self.let_go.set()

    def close(self) -> None:
        pass


class RecordingProgress(BarProgress):
    """The real bar, drawn to a recording console, also noting every call the runner makes."""

    def __init__(self) -> None:
        super().__init__(Console(file=io.StringIO(), width=160))
        self.calls: list[tuple[str, str]] = []

    def start(self, total: int) -> None:
        self.calls.append(("start", str(total)))
        super().start(total)

    def started(self, job: Job, executor_name: str) -> None:
        self.calls.append(("started", f"{executor_name} {job.name}=={job.version}"))
        super().started(job, executor_name)

    def finished(self, job: Job, ok: bool, report: RunReport) -> None:
        self.calls.append(("finished", f"{job.name}=={job.version}"))
        super().finished(job, ok, report)

    def abandoned(self, job: Job) -> None:
        self.calls.append(("abandoned", f"{job.name}=={job.version}"))
        super().abandoned(job)

    def drawn(self) -> str:
        """What the bar shows now, as text."""
        console = Console(record=True, file=io.StringIO(), width=160)
        console.print(self.bar.get_renderable())
        return console.export_text()


def _two_versions(db: Database) -> tuple[int, int]:
    """A watched project with versions 1.0 and 2.0, one ABI, a builder: (ABI, builder) ids."""
    with db.session() as session:
        abi = Abi(tag=ABI, python_tag="cp311", abi_tag="cp311", platform_tag="linux_x86_64")
        builder = Builder(name="fake-blocking", host="fake.invalid", info={})
        project = Project(name="demo", display_name="demo", watched=True)
        for version in ("1.0", "2.0"):
            project.versions.append(
                Version(version=version, release_time=T0, sdist_url=f"http://x.invalid/demo-{version}.tar.gz")
            )
        session.add_all([abi, builder, project])
        session.flush()
        return abi.id, builder.id


def test_the_bar_shows_each_build_in_progress_from_its_start(db: Database, tmp_path: Path) -> None:
    abi_id, builder_id = _two_versions(db)
    executor = FakeBlockingExecutor(builder_id, abi_id, tmp_path)
    progress = RecordingProgress()
    settings = Settings(data_dir=tmp_path / "data", build_timeout=600, debian_mirror="")
    runner = Runner(db, settings, [executor], progress)
    reports: list[RunReport] = []
    thread = threading.Thread(target=lambda: reports.append(runner.run()))
    thread.start()
    try:
        for slot in (1, 2):
            assert executor.entered.acquire(timeout=WAIT), f"build {slot} never reached the builder"
        # The runner says "started" right after handing the build over: give it that moment.
        deadline = time.monotonic() + WAIT
        while len(progress.calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        # Both builds are running, none has finished: the bar names both, with their builder.
        assert progress.calls[0] == ("start", "2"), progress.calls
        assert sorted(progress.calls[1:]) == [
            ("started", "fake-blocking demo==1.0"),
            ("started", "fake-blocking demo==2.0"),
        ], progress.calls
        time.sleep(1.1)  # so that the elapsed time has moved
        drawn = progress.drawn()
        for version in ("1.0", "2.0"):
            line = re.search(rf"(?m)^\s*fake-blocking\s+demo=={version}\s+{ABI}\s+(\d+:\d\d:\d\d)\s*$", drawn)
            assert line is not None, f"no line for the build of demo=={version} in:\n{drawn}"
            assert line.group(1) != "0:00:00", f"the elapsed time of demo=={version} did not move:\n{drawn}"
        assert "0/2" in drawn, drawn
    finally:
        executor.let_go.set()
        thread.join(WAIT)
    assert not thread.is_alive(), "the run did not end once its builds were released"
    progress.stop()
    assert [r.failed for r in reports] == [2], reports
    assert sorted(c for c in progress.calls if c[0] == "finished") == [
        ("finished", "demo==1.0"),
        ("finished", "demo==2.0"),
    ], progress.calls
    drawn = progress.drawn()
    assert "fake-blocking" not in drawn and "demo==" not in drawn, f"finished builds still shown:\n{drawn}"
    assert "2/2" in drawn and "failed 2" in drawn, drawn


def test_a_build_handed_back_leaves_the_bar() -> None:
    progress = BarProgress(Console(file=io.StringIO(), width=160))
    job = Job(version_id=1, abi_id=1, name="demo", version="1.0", abi=ABI, priority=0)
    other = Job(version_id=2, abi_id=1, name="demo", version="2.0", abi=ABI, priority=0)
    progress.started(job, "b1")
    progress.started(other, "b2")
    console = Console(record=True, file=io.StringIO(), width=160)
    console.print(progress.bar.get_renderable())
    drawn = console.export_text()
    assert re.search(rf"b1\s+demo==1\.0\s+{ABI}\s+0:00:0\d", drawn), drawn
    assert re.search(rf"b2\s+demo==2\.0\s+{ABI}", drawn), drawn
    progress.abandoned(job)
    console.print(progress.bar.get_renderable())
    after = console.export_text()
    assert "demo==1.0" not in after and "demo==2.0" in after, after
    assert isinstance(progress, Progress)


def _read_until(fd: int, proc: subprocess.Popen[bytes], pattern: str, timeout: float) -> str:
    """The terminal's output until ``pattern`` shows (escape codes removed), or the process ends."""
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the process closed the terminal
                break
            seen += chunk
            text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen.decode(errors="replace"))
            if re.search(pattern, text):
                return text
        elif proc.poll() is not None:
            break
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen.decode(errors="replace"))


@pytest.mark.build
def test_run_shows_the_first_build_while_it_runs(
    tmp_path: Path, fixture_sdists: dict[str, Path], build_deps: Path
) -> None:
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    shutil.copy(fixture_sdists["slow-ok"], upstream)  # its build sleeps 5 s
    for wheel in build_deps.glob("*.whl"):
        shutil.copy(wheel, upstream)
    with IndexServer(upstream) as index:
        env = clean_env(
            PIWHEELS_DATA_DIR=str(tmp_path / "data"),
            PIWHEELS_UPSTREAM=index.url,
            PIWHEELS_SLOTS="1",
            PIWHEELS_DEBIAN_MIRROR="",
            COLUMNS="160",
            TERM="xterm",
        )
        piwheels(env, "init")
        piwheels(env, "add", "slow-ok")
        main, terminal = pty.openpty()
        proc = subprocess.Popen(
            [str(PIWHEELS), "run"], env=env, stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal
        )
        os.close(terminal)
        try:
            shown = _read_until(main, proc, r"local\s+slow-ok==\S+\s+cp\d+", timeout=300)
            still_running = proc.poll() is None
            rest = _read_until(main, proc, r"built \d+, failed \d+", timeout=300)
            assert proc.wait(timeout=60) == 0, shown + rest
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            os.close(main)
    assert re.search(r"local\s+slow-ok==\S+\s+cp\d+\S*\s+\d:\d\d:\d\d", shown), shown
    assert still_running, f"the build's line showed only once run had ended:\n{shown}"
    assert "built 1, failed 0" in rest, shown + rest
