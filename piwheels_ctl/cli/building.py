"""The `run` command: build with a progress bar, once or forever."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

import click
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as Bar
from rich.table import Table

from ..builds.runner import Progress, Runner, RunReport
from ..errors import PiwheelsError
from ..queue.claims import Job
from . import App, cli, err, out, pass_app


@dataclass(frozen=True)
class Running:
    """One build in progress, as the bar shows it."""

    builder: str
    job: Job
    since: float  # time.monotonic() when it was handed to the builder


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class _Bar(Bar):
    """rich's progress bar, with one line under it per build in progress."""

    def __init__(self, *columns: ProgressColumn, console: Console) -> None:
        # Replaced, never changed in place: rich draws from its own thread. Set before rich's
        # own __init__, which draws once.
        self.running: dict[tuple[int, int], Running] = {}
        super().__init__(*columns, console=console, transient=False)

    def add_running(self, build: Running) -> None:
        self.running = {**self.running, (build.job.version_id, build.job.abi_id): build}
        self.refresh()

    def remove_running(self, job: Job) -> None:
        self.running = {k: v for k, v in self.running.items() if k != (job.version_id, job.abi_id)}
        self.refresh()

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        running = self.running
        if not running:
            return
        now = time.monotonic()
        lines = Table.grid(padding=(0, 2))
        for _ in range(4):
            lines.add_column(no_wrap=True)
        for build in sorted(running.values(), key=lambda r: (r.builder, r.since)):
            job = build.job
            lines.add_row(
                f"  [cyan]{escape(build.builder)}[/]",
                escape(f"{job.name}=={job.version}"),
                escape(job.abi),
                _elapsed(now - build.since),
            )
        yield lines


class LineProgress(Progress):
    """With ``lines`` (stdout is not a terminal: journald, CI), one line on stdout per finished
    build: project, version, ABI, result, duration, and a failure's reason."""

    def __init__(self, lines: bool) -> None:
        self.lines = lines
        self.since: dict[tuple[int, int], float] = {}

    def started(self, job: Job, executor_name: str) -> None:
        self.since[(job.version_id, job.abi_id)] = time.monotonic()

    def finished(self, job: Job, ok: bool, report: RunReport) -> None:
        since = self.since.pop((job.version_id, job.abi_id), None)
        if not self.lines:
            return
        took = f"{time.monotonic() - since:.1f}s" if since is not None else "-"
        line = f"{job.name} {job.version} {job.abi} {'built' if ok else 'failed'} {took}"
        if not ok and report.failures and report.failures[-1][0] == f"{job.name}=={job.version} ({job.abi})":
            _, reason, detail = report.failures[-1]
            line += f" {reason}" + (f": {detail}" if detail else "")
        click.echo(line)

    def abandoned(self, job: Job) -> None:
        self.since.pop((job.version_id, job.abi_id), None)


class BarProgress(LineProgress):
    """A rich progress bar of built / failed / remaining, and a line per build in progress:
    builder, project==version, ABI and how long it has been building."""

    def __init__(self, console: Console | None = None, *, lines: bool = False) -> None:
        super().__init__(lines)
        self.bar = _Bar(
            TextColumn("[bold]building"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("built {task.fields[built]} · failed {task.fields[failed]}"),
            TimeElapsedColumn(),
            console=console or err,
        )
        self.task = self.bar.add_task("build", total=0, built=0, failed=0)

    def start(self, total: int) -> None:
        self.bar.update(self.task, total=total)
        self.bar.start()

    def started(self, job: Job, executor_name: str) -> None:
        super().started(job, executor_name)
        self.bar.add_running(Running(executor_name, job, time.monotonic()))

    def finished(self, job: Job, ok: bool, report: RunReport) -> None:
        super().finished(job, ok, report)
        self.bar.remove_running(job)
        total = max(self.bar.tasks[0].total or 0, report.built + report.failed)
        self.bar.update(self.task, total=total, advance=1, built=report.built, failed=report.failed)
        self.bar.refresh()

    def abandoned(self, job: Job) -> None:
        super().abandoned(job)
        self.bar.remove_running(job)

    def stop(self) -> None:
        self.bar.stop()


def _print_report(report: RunReport) -> None:
    for job, reason, detail in report.failures:
        message = f"[red]failed[/] {escape(job)}: {reason}" + (f" ({escape(detail)})" if detail else "")
        err.print(message, highlight=False, soft_wrap=True)
    for error in report.builder_errors:
        err.print(f"[yellow]builder[/] {escape(error)}", highlight=False, soft_wrap=True)
    for job, error in report.builder_faults:
        err.print(
            f"[bold yellow]warning:[/] {escape(job)} recorded as builder-fault: the builders failed it"
            f" again and again ({escape(error)}); fix them, then 'rebuild --failed-with builder-fault'",
            highlight=False,
            soft_wrap=True,
        )
    for filename, release, outcome in report.checks:
        out.print(f"checked {escape(filename)} on {escape(release)}: {outcome}", highlight=False)
    out.print(
        f"built {report.built}, failed {report.failed}, remaining {report.remaining}"
        + (f", {report.handed_back} handed back" if report.handed_back else "")
        + (f", {len(report.builder_faults)} builder fault(s)" if report.builder_faults else "")
        + (f", {report.lost} lost to another controller" if report.lost else ""),
        highlight=False,
        soft_wrap=True,
    )


def _mirror_round(app: App) -> None:
    """Fetch and publish the upstream's wheels that cover what would otherwise be built."""
    if not app.settings.mirror_upstream:
        return
    from ..catalog.mirror import candidates, mirror

    db = app.database()
    with db.reader() as session:
        todo = candidates(session)
    if not todo:  # the usual round: nothing to fetch, so no upstream to open
        return
    with app.upstream() as upstream, err.status("mirroring") as status:
        report = mirror(db, app.settings, upstream, lambda c: status.update(f"mirroring {c.filename}"), todo)
    for _filename, error in report.retried:
        err.print(
            f"[yellow]mirror:[/] {escape(error)} (tried again next run)", highlight=False, soft_wrap=True
        )
    for filename, error in report.given_up:
        err.print(
            f"[yellow]mirror:[/] {escape(filename)} given up, its targets are built: {escape(error)}",
            highlight=False,
            soft_wrap=True,
        )
    if report.mirrored:
        out.print(f"mirrored {len(report.mirrored)} wheel(s) from the upstream")


def _build_once(app: App, limit: int | None, runner_box: list[Runner], progress: Progress) -> RunReport:
    from ..farm.executors import open_executors

    db = app.database()
    # Brings the local builder up to the settings first: a new ABI gets its upstream coverage
    # before the mirror round looks for what to fetch. (No connection is made yet.)
    executors = open_executors(db, app.settings)
    try:
        _mirror_round(app)
    except BaseException:
        for executor in executors:
            executor.close()
        raise
    runner = Runner(db, app.settings, executors, progress)
    runner_box[:] = [runner]
    return runner.run(limit=limit)


def _sync_round(app: App) -> None:
    """One sync of ``run --forever``: whatever goes wrong is reported, and the farm goes on."""
    from ..catalog.sync import sync

    try:
        with app.upstream() as upstream:
            report = sync(app.database().session, upstream, glibc=app.glibc())
    # Anything at all: a hostile page, the upstream or the database away, or a bug in the
    # sync must not stop building and publishing; the next round tries again.
    except Exception as exc:
        message = str(exc).splitlines()[0] if str(exc) else ""
        if not isinstance(exc, PiwheelsError):
            message = f"{type(exc).__name__}: {message}"
        err.print(f"[yellow]sync failed:[/] {escape(message)}", highlight=False, soft_wrap=True)
        return
    for problem in report.problems:
        err.print(f"[yellow]sync warning:[/] {escape(problem.message)}", highlight=False, soft_wrap=True)
    err.print(
        f"synced: {report.changed} project(s) changed, {report.new} new version(s)"
        + (f", {len({p.name for p in report.problems})} with problems" if report.problems else ""),
        highlight=False,
        soft_wrap=True,
    )


@cli.command()
@click.option("--limit", type=click.IntRange(min=1), help="Stop after this many builds.")
@click.option("--forever", is_flag=True, help="Keep going: sync every sync_interval seconds, build, publish.")
@pass_app
def run(app: App, limit: int | None, forever: bool) -> None:
    """Build until the queue is empty (or --limit builds); SIGTERM finishes the running builds."""
    stop = threading.Event()
    runner_box: list[Runner] = []

    def terminate(_signum: int, _frame: object) -> None:
        stop.set()
        for runner in runner_box:
            runner.stop()

    signal.signal(signal.SIGTERM, terminate)
    if not forever:
        app.check_intact()
        progress = BarProgress(lines=not out.is_terminal)
        try:
            report = _build_once(app, limit, runner_box, progress)
        finally:
            progress.stop()
        _print_report(report)
        return
    next_sync = 0.0
    while not stop.is_set():
        app.check_intact()  # each round: the service stops rather than go on with a damaged file
        if time.monotonic() >= next_sync:
            _sync_round(app)
            next_sync = time.monotonic() + app.settings.sync_interval
        report = _build_once(app, limit, runner_box, LineProgress(lines=not out.is_terminal))
        _print_report(report)
        app.publish()
        if report.built + report.failed == 0:
            stop.wait(min(60.0, max(1.0, next_sync - time.monotonic())))
