"""The ``piwheels-ctl`` command: each subcommand a thin call into the parts."""

from __future__ import annotations

import dataclasses
import gzip
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as Bar
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from . import __version__, catalog
from .audit import audit as audit_check
from .audit import fix as audit_fix
from .builders import check_name, check_python, list_builders, register_remote, remove_builder, set_pythons
from .collector import inspect_wheel
from .config import Settings, load_settings
from .database import Database, check_schema, upgrade
from .errors import InputError, PiwheelsError
from .executors import open_executors, probe_remote, remote_builder
from .models import Abi, Build, Builder, BuildStatus, File, Project, Version
from .publisher import publish as publish_index
from .queue import Job, pending
from .recorder import import_wheel
from .runner import Progress, Runner, RunReport
from .transport import Endpoint, fingerprint, scan_host_key
from .upstream import Upstream

err = Console(stderr=True)
out = Console()


class App:
    """Settings and the database, opened on first use."""

    def __init__(self, config: Path | None) -> None:
        self.config = config
        self._settings: Settings | None = None
        self._db: Database | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config)
        return self._settings

    def database(self, *, checked: bool = True) -> Database:
        if self._db is None:
            self._db = Database(self.settings.database)
            if checked:
                check_schema(self._db.engine)
        return self._db

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.database().session() as session:
            yield session

    def upstream(self) -> Upstream:
        return Upstream(self.settings.upstream, timeout=self.settings.http_timeout)

    def close(self) -> None:
        if self._db is not None:
            self._db.dispose()


pass_app = click.make_pass_decorator(App)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False),
    help="TOML settings file (default: $PIWHEELS_CONFIG).",
)
@click.version_option(__version__, prog_name="piwheels-ctl")
@click.pass_context
def cli(ctx: click.Context, config: Path | None) -> None:
    """Build wheels from sdists and serve them as a pip index."""
    app = App(config)
    ctx.obj = app
    ctx.call_on_close(app.close)


@cli.command()
@pass_app
def init(app: App) -> None:
    """Create the database, or upgrade it to this version's schema."""
    db = app.database(checked=False)
    before, head = upgrade(db.engine)
    for folder in (app.settings.www_dir, app.settings.logs_dir, app.settings.work_dir):
        folder.mkdir(parents=True, exist_ok=True)
    state = "created" if before is None else ("upgraded" if before != head else "up to date")
    out.print(f"database {state} (schema {head}) at {db.engine.url.render_as_string()}")


@cli.command()
@click.argument("specs", nargs=-1)
@click.option("-r", "--requirement", "requirements", multiple=True, type=click.Path(path_type=Path),
              help="Add the requirements of a pip requirements file (newest matching version).")  # fmt: skip
@pass_app
def add(app: App, specs: tuple[str, ...], requirements: tuple[Path, ...]) -> None:
    """Watch projects: NAME builds every version, NAME==VERSION that version."""
    wanted = [catalog.parse_wanted(spec, "add") for spec in specs]
    for path in requirements:
        wanted += catalog.read_requirements(path)
    if not wanted:
        raise InputError("add: give at least one NAME[==VERSION] or -r FILE")
    with app.upstream() as upstream, app.session() as session:
        added = catalog.add(session, upstream, wanted)
    for name, versions in added:
        out.print(f"{name}: " + (", ".join(versions) if versions else "all versions"))


@cli.command()
@click.argument("names", nargs=-1, required=True)
@pass_app
def remove(app: App, names: tuple[str, ...]) -> None:
    """Stop building projects (their published wheels stay)."""
    with app.session() as session:
        for name in names:
            catalog.remove(session, name)
    out.print(f"removed {len(names)} project(s)")


@cli.command()
@click.option("--all", "everything", is_flag=True, help="Record every project name of the upstream.")
@pass_app
def sync(app: App, everything: bool) -> None:
    """Refresh the versions of watched projects from the upstream."""
    with app.upstream() as upstream:
        if everything:
            with app.session() as session:
                added = catalog.sync_all(session, upstream)
            out.print(f"{added} new project name(s) recorded")
        with app.session() as session, err.status("syncing") as status:
            changed, new = catalog.sync(session, upstream, lambda name: status.update(f"syncing {name}"))
    out.print(f"{changed} project(s) changed, {new} new version(s)")


def _parse_name(spec: str) -> tuple[str, str | None]:
    name, _, version = spec.partition("==")
    catalog.parse_wanted(name, spec)
    return name.strip(), version.strip() or None


@cli.command()
@click.argument("spec")
@pass_app
def rebuild(app: App, spec: str) -> None:
    """Build NAME[==VERSION] again, before everything else."""
    name, version = _parse_name(spec)
    with app.session() as session:
        count = catalog.rebuild(session, name, version)
    out.print(f"{count} version(s) of {name} queued for a rebuild")


@cli.command()
@click.argument("spec")
@click.option("--reason", required=True, help="Why it must not be built (shown in status).")
@pass_app
def skip(app: App, spec: str, reason: str) -> None:
    """Never build NAME[==VERSION]."""
    name, version = _parse_name(spec)
    with app.session() as session:
        count = catalog.skip(session, name, version, reason)
    out.print(f"skipping {name}" + (f"=={version}" if version else f" ({count} version(s))"))


def _job_dict(job: Job) -> dict[str, Any]:
    return {"name": job.name, "version": job.version, "abi": job.abi, "priority": job.priority}


@cli.command()
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def queue(app: App, limit: int, as_json: bool) -> None:
    """Show what still needs a build, in build order."""
    with app.session() as session:
        jobs = list(pending(session, limit=limit))
    if as_json:
        click.echo(json.dumps([_job_dict(j) for j in jobs], indent=2))
        return
    table = Table("project", "version", "ABI", "priority")
    for job in jobs:
        table.add_row(job.name, job.version, job.abi, str(job.priority))
    out.print(table if jobs else "the queue is empty")


class BarProgress(Progress):
    """A rich progress bar showing built / failed / remaining."""

    def __init__(self) -> None:
        self.bar = Bar(
            TextColumn("[bold]building"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("built {task.fields[built]} · failed {task.fields[failed]}"),
            TextColumn("{task.fields[current]}"),
            TimeElapsedColumn(),
            console=err,
            transient=False,
        )
        self.task = self.bar.add_task("build", total=0, built=0, failed=0, current="")

    def start(self, total: int) -> None:
        self.bar.update(self.task, total=total)
        self.bar.start()

    def finished(self, job: Job, ok: bool, report: RunReport) -> None:
        total = max(self.bar.tasks[0].total or 0, report.built + report.failed)
        self.bar.update(
            self.task,
            total=total,
            advance=1,
            built=report.built,
            failed=report.failed,
            current=f"{job.name} {job.version}",
        )

    def stop(self) -> None:
        self.bar.stop()


def _print_report(report: RunReport) -> None:
    for job, reason, detail in report.failures:
        err.print(f"[red]failed[/] {escape(job)}: {reason}" + (f" ({escape(detail)})" if detail else ""))
    for error in report.builder_errors:
        err.print(f"[yellow]builder[/] {escape(error)}")
    out.print(
        f"built {report.built}, failed {report.failed}, remaining {report.remaining}"
        + (f", {report.handed_back} handed back" if report.handed_back else "")
        + (f", {report.lost} lost to another controller" if report.lost else "")
    )


def _build_once(app: App, limit: int | None, runner_box: list[Runner], progress: Progress) -> RunReport:
    db = app.database()
    runner = Runner(db, app.settings, open_executors(db, app.settings), progress)
    runner_box[:] = [runner]
    return runner.run(limit=limit)


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
        progress = BarProgress()
        try:
            report = _build_once(app, limit, runner_box, progress)
        finally:
            progress.stop()
        _print_report(report)
        return
    next_sync = 0.0
    while not stop.is_set():
        if time.monotonic() >= next_sync:
            with app.upstream() as upstream, app.session() as session:
                try:
                    changed, new = catalog.sync(session, upstream)
                    err.print(f"synced: {changed} project(s) changed, {new} new version(s)")
                except PiwheelsError as exc:  # an upstream hiccup must not stop the farm
                    err.print(f"[yellow]sync failed:[/] {escape(str(exc))}")
            next_sync = time.monotonic() + app.settings.sync_interval
        report = _build_once(app, limit, runner_box, Progress())
        _print_report(report)
        with app.session() as session:
            publish_index(session, app.settings.www_dir)
        if report.built + report.failed == 0:
            stop.wait(min(60.0, max(1.0, next_sync - time.monotonic())))


def _status(session: Session) -> dict[str, Any]:
    def count(query: Any) -> int:
        return int(session.scalar(query) or 0)

    builds = dict(session.execute(select(Build.status, func.count()).group_by(Build.status)).tuples().all())
    reasons = dict(
        session.execute(
            select(Build.failure_reason, func.count())
            .where(Build.status == BuildStatus.FAILED)
            .group_by(Build.failure_reason)
        )
        .tuples()
        .all()
    )
    return {
        "projects": count(select(func.count()).select_from(Project)),
        "watched": count(select(func.count()).where(Project.watched)),
        "versions": count(select(func.count()).select_from(Version)),
        "abis": [a.tag for a in session.scalars(select(Abi).where(Abi.active).order_by(Abi.tag))],
        "builds": {status.value: builds.get(status, 0) for status in BuildStatus},
        "failures": {str(k): v for k, v in sorted(reasons.items(), key=lambda kv: str(kv[0]))},
        "files": count(select(func.count()).select_from(File)),
        "bytes": count(select(func.coalesce(func.sum(File.size), 0))),
        "pending": sum(1 for _ in pending(session)),
    }


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def status(app: App, as_json: bool) -> None:
    """Counts of projects, versions, builds, files and the queue."""
    with app.session() as session:
        info = _status(session)
    if as_json:
        click.echo(json.dumps(info, indent=2, sort_keys=True))
        return
    table = Table(show_header=False)
    for key, value in info.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
        elif isinstance(value, list):
            value = ", ".join(value) or "-"
        table.add_row(key, str(value))
    out.print(table)


@cli.command()
@click.argument("name")
@click.argument("version")
@pass_app
def logs(app: App, name: str, version: str) -> None:
    """Print the logs of the builds of NAME VERSION, newest first."""
    with app.session() as session:
        _project, versions = catalog.find(session, name, version)
        builds = sorted(versions[0].builds, key=lambda b: (b.started_at, b.id), reverse=True)
        entries = [(b.abi.tag, b.status.value, b.failure_reason, b.log_path) for b in builds]
    if not entries:
        raise InputError(f"{name} {version}: no builds yet")
    for tag, state, reason, path in entries:
        click.echo(f"==> {name} {version} {tag}: {state}" + (f" ({reason})" if reason else ""))
        if path is None:
            click.echo("(no log)")
            continue
        with gzip.open(app.settings.logs_dir / path, "rt", encoding="utf-8", errors="replace") as f:
            sys.stdout.write(f.read())


@cli.command(name="import")
@click.argument("wheels", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
@pass_app
def import_(app: App, wheels: tuple[Path, ...]) -> None:
    """Add wheels built elsewhere to the index (checked first, all or nothing per wheel)."""
    verified = []
    for path in wheels:
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        verified.append(inspect_wheel(path))
    db = app.database()
    for wheel in verified:
        import_wheel(db, app.settings.www_dir, wheel)
        out.print(f"imported {wheel.filename}")


@cli.command()
@click.option("--full", is_flag=True, help="Rewrite every page, not only what changed.")
@pass_app
def publish(app: App, full: bool) -> None:
    """Write the static index under <data dir>/www from the database."""
    with app.session() as session:
        result = publish_index(session, app.settings.www_dir, full=full)
    out.print(
        f"published {result.projects_written} project page(s)"
        + (", root index rewritten" if result.root_written else "")
        + f" in {app.settings.www_dir}"
    )


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@pass_app
def serve(app: App, host: str, port: int) -> None:
    """Serve the index (for one machine; a farm uses nginx)."""
    from .server import serve as serve_index

    www = app.settings.www_dir
    if not (www / "simple").is_dir():
        raise InputError(f"{www}: nothing published yet (run 'piwheels-ctl publish')")
    err.print(f"serving {www} on http://{host}:{port}/simple/")
    serve_index(www, host, port)


@cli.command()
@click.option("--fix", "repair", is_flag=True, help="Repair what the database can tell, then publish.")
@click.option("--deep", is_flag=True, help="Also re-hash every wheel.")
@pass_app
def audit(app: App, repair: bool, deep: bool) -> None:
    """Check that the database, the wheels on disk and the published index agree."""
    www = app.settings.www_dir
    with app.session() as session:
        found = audit_check(session, www, deep=deep)
        for problem in found:
            out.print(f"{problem.kind}: {escape(problem.where)}: {escape(problem.detail)}")
        if not found:
            out.print("no disagreement")
            return
        if not repair:
            raise PiwheelsError(f"{len(found)} disagreement(s); 'piwheels-ctl audit --fix' repairs them")
        for action in audit_fix(session, www, app.settings.data_dir, found):
            out.print(f"fixed: {escape(action)}")
    with app.session() as session:
        publish_index(session, www)
        left = audit_check(session, www, deep=deep)
    if left:
        raise PiwheelsError(f"{len(left)} disagreement(s) left after --fix")
    out.print("no disagreement left")


@cli.group()
def builders() -> None:
    """The builder hosts reached over SSH."""


def _host_key(app: App, name: str, endpoint: Endpoint, host_key: str | None, trust: bool) -> str:
    """The key the builder must present: given, recorded before, or scanned now with --trust-host-key."""
    if host_key:
        return host_key.strip()
    with app.session() as session:
        known = session.scalar(select(Builder.host_key).where(Builder.name == name))
    if known:
        return known
    offered = scan_host_key(endpoint.host, endpoint.port, timeout=app.settings.connect_timeout)
    if not trust:
        raise InputError(
            f"{endpoint.host}:{endpoint.port}: host key unknown ({fingerprint(offered)}); "
            "check it and pass --trust-host-key to record it, or give it with --host-key"
        )
    return offered


@builders.command(name="add")
@click.argument("name")
@click.option("--host", required=True, help="Address of the builder.")
@click.option("--port", type=click.IntRange(1, 65535), default=22, show_default=True)
@click.option("--user", help="SSH user (default: the controller's user).")
@click.option("--key", "key_file", type=click.Path(path_type=Path, dir_okay=False), help="SSH private key.")
@click.option("--python", "pythons", multiple=True, required=True, help="An interpreter on the builder.")
@click.option("--slots", type=click.IntRange(1, 256), default=1, show_default=True)
@click.option("--host-key", help='The builder\'s public host key, "TYPE BASE64".')
@click.option("--trust-host-key", is_flag=True, help="Record the key the builder offers (first use).")
@pass_app
def builders_add(
    app: App,
    name: str,
    host: str,
    port: int,
    user: str | None,
    key_file: Path | None,
    pythons: tuple[str, ...],
    slots: int,
    host_key: str | None,
    trust_host_key: bool,
) -> None:
    """Register (or update) a builder: its interpreters' ABIs are probed on the builder."""
    check_name(name)
    for python in pythons:
        check_python(python)
    key = str(key_file.resolve()) if key_file else None
    endpoint = Endpoint(host=host, port=port, user=user, key_file=key)
    endpoint = dataclasses.replace(
        endpoint, host_key=_host_key(app, name, endpoint, host_key, trust_host_key)
    )
    probe = probe_remote(app.settings, endpoint, pythons)
    with app.session() as session:
        state = register_remote(
            session, name=name, host=host, port=port, user=user, key_file=key,
            host_key=endpoint.host_key or "", slots=slots, info=probe.info, probes=probe.pythons,
        )  # fmt: skip
    tags = ", ".join(f"{p['python_tag']}-{p['abi_tag']}-{p['platform_tag']}" for p in probe.pythons.values())
    out.print(f"{state} {name}: {tags}")


def _builder_dict(builder: Builder) -> dict[str, Any]:
    return {
        "name": builder.name,
        "host": builder.host,
        "port": builder.port,
        "user": builder.user,
        "slots": builder.slots,
        "healthy": builder.healthy,
        "abis": sorted(p.abi.tag for p in builder.pythons),
        "pythons": sorted(p.path for p in builder.pythons),
        "free_mb": builder.info.get("free_mb"),
        "load": builder.info.get("load"),
        "checked_at": builder.info.get("checked_at"),
        "last_error": builder.info.get("last_error"),
    }


@builders.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def builders_list(app: App, as_json: bool) -> None:
    """Show the builders, their ABIs and health."""
    with app.session() as session:
        rows = [_builder_dict(b) for b in list_builders(session)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table("name", "address", "slots", "ABIs", "healthy", "free MB", "load")
    for row in rows:
        user = f"{row['user']}@" if row["user"] else ""
        address = "this machine" if row["host"] is None else f"{user}{row['host']}:{row['port']}"
        health = "yes" if row["healthy"] else "no"
        free, load = str(row["free_mb"] or "-"), str(row["load"] or "-")
        table.add_row(row["name"], address, str(row["slots"]), ", ".join(row["abis"]), health, free, load)
    out.print(table)


@builders.command(name="remove")
@click.argument("name")
@pass_app
def builders_remove(app: App, name: str) -> None:
    """Forget a builder (its past builds stay recorded)."""
    with app.session() as session:
        remove_builder(session, name)
    out.print(f"removed {name}")


@builders.command(name="check")
@click.argument("name", required=False)
@pass_app
def builders_check(app: App, name: str | None) -> None:
    """Probe builders over SSH: ABIs, free disk, load, ccache; an unreachable one is reported."""
    with app.session() as session:
        targets = [
            (remote_builder(b), sorted({p.path for p in b.pythons}))
            for b in list_builders(session)
            if b.host is not None and name in (None, b.name)
        ]
    if name is not None and not targets:
        raise InputError(f"{name}: no such SSH builder")
    for builder, pythons in targets:
        try:
            probe = probe_remote(app.settings, builder.endpoint, pythons)
        except PiwheelsError as exc:
            with app.session() as session:
                row = session.get(Builder, builder.builder_id)
                if row is not None:
                    row.healthy = False
                    row.info = {**row.info, "last_error": str(exc)}
            out.print(f"[red]{builder.name}: unreachable[/]: {escape(str(exc))}")
            continue
        with app.session() as session:
            row = session.get(Builder, builder.builder_id)
            assert row is not None
            row.info = {**row.info, **probe.info, "last_error": None}
            row.healthy = True
            row.retry_at = None
            set_pythons(session, row, probe.pythons)
        out.print(f"{builder.name}: ok, {probe.info['free_mb']} MB free, load {probe.info['load']}")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; errors become one line on stderr and a non-zero exit code."""
    try:
        cli.main(args=argv, prog_name="piwheels-ctl", standalone_mode=False)
    except PiwheelsError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except click.exceptions.Abort:
        err.print("interrupted")
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except OperationalError as exc:
        err.print(f"[bold red]error:[/] database: {escape(str(exc.orig))}", highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
