"""Commands on the projects and their builds: init, add, remove, sync, rebuild, skip, unskip, logs, import."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from ..abi import AbiTags
from ..builds.record import import_wheel
from ..builds.verify import inspect_wheel
from ..catalog import projects
from ..catalog.rebuild import rebuild as requeue
from ..catalog.rebuild import rebuild_failed
from ..catalog.requirements import parse_wanted, read_requirements
from ..catalog.sync import sync as sync_tracked
from ..catalog.sync import sync_all
from ..db.engine import check_integrity, upgrade
from ..db.models import Build
from ..errors import InputError, PiwheelsError, UpstreamError
from ..publish.pages import version_key
from . import App, cli, err, out, pass_app


@cli.command()
@pass_app
def init(app: App) -> None:
    """Create the database, or upgrade it to this version's schema."""
    db = app.database(checked=False)
    check_integrity(db.engine, full=False)  # a damaged database is restored, not migrated
    before, head = upgrade(db.engine)
    for folder in (app.settings.www_dir, app.settings.logs_dir, app.settings.work_dir):
        folder.mkdir(parents=True, exist_ok=True)
    state = "created" if before is None else ("upgraded" if before != head else "up to date")
    out.print(f"database {state} (schema {head}) at {db.engine.url.render_as_string()}")


def _farm_abis(app: App) -> list[AbiTags]:
    """The Pythons the farm builds for: the ABIs recorded, or before the first run the local
    builder's interpreters, probed with nothing written (a bad name must change nothing)."""
    with app.reader() as session:
        abis = projects.active_abis(session)
    if abis or not app.settings.local_builder:
        return abis
    from ..farm.registry import probe_local

    probes = [probe_local(python) for python in app.settings.pythons]
    return [AbiTags(p["python_tag"], p["abi_tag"], p["platform_tag"]) for p in probes]


@cli.command()
@click.argument("specs", nargs=-1)
@click.option("-r", "--requirement", "requirements", multiple=True, type=click.Path(path_type=Path),
              help="Add the requirements of a pip requirements file (what pip would install). "
                   "pip's options, editable, path and URL lines are skipped with a warning.")  # fmt: skip
@pass_app
def add(app: App, specs: tuple[str, ...], requirements: tuple[Path, ...]) -> None:
    """Watch projects: NAME builds every version, NAME==VERSION that version.

    A range (NAME>=X) asks for what pip would install: the newest version that is not yanked
    and that each Python of the farm accepts (Requires-Python)."""
    wanted = [parse_wanted(spec, "add") for spec in specs]
    bad: list[str] = []
    for path in requirements:
        found = read_requirements(path)
        for skipped in found.skipped:
            err.print(f"[yellow]warning:[/] {escape(skipped)}", highlight=False, soft_wrap=True)
        bad += found.bad
        wanted += found.wanted
    for message in bad:
        err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if not wanted and not bad:
        raise InputError("add: give at least one NAME[==VERSION] or -r FILE")
    if wanted:
        abis = _farm_abis(app)  # the farm's Pythons decide which versions fit
        glibc = app.glibc()
        with app.upstream() as upstream, app.session() as session:
            report = projects.add(session, upstream, wanted, glibc, abis)
        for problem in report.problems:
            err.print(f"[yellow]warning:[/] {escape(problem.message)}", highlight=False, soft_wrap=True)
        for added in report.added:
            if not added.skipped:  # a skipped request was said above, as a warning, not as a success
                out.print(
                    f"{added.name}: " + (", ".join(added.versions) if added.versions else "all versions")
                )
    if bad:
        raise InputError(f"{len(bad)} line(s) are not requirements (above); the other lines were added")


@cli.command()
@click.argument("names", nargs=-1, required=True)
@pass_app
def remove(app: App, names: tuple[str, ...]) -> None:
    """Stop building projects (their published wheels stay)."""
    with app.session() as session:
        for name in names:
            projects.remove(session, name)
    out.print(f"removed {len(names)} project(s)")


@cli.command()
@click.option("--all", "everything", is_flag=True, help="Record every project name of the upstream.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, problems included.")
@pass_app
def sync(app: App, everything: bool, as_json: bool) -> None:
    """Refresh the versions of watched projects from the upstream.

    A project that is gone from the upstream or whose page is bad is reported and skipped;
    the command fails only when nothing could be synced.
    """
    db = app.database()
    listing: dict[str, Any] | None = None
    failed = False
    with app.upstream() as upstream:
        if everything:
            try:
                listed = sync_all(db.session, upstream)
                listing = {"added": listed.added, "problems": [p.message for p in listed.problems]}
            except PiwheelsError as exc:  # the listing failed; the watched projects still get synced
                listing, failed = {"added": None, "problems": [str(exc)]}, True
            for problem in listing["problems"]:
                err.print(f"[yellow]warning:[/] {escape(problem)}", highlight=False, soft_wrap=True)
        with err.status("syncing") as status:
            report = sync_tracked(
                db.session, upstream, lambda name: status.update(f"syncing {name}"), app.glibc()
            )
    for problem in report.problems:
        err.print(f"[yellow]warning:[/] {escape(problem.message)}", highlight=False, soft_wrap=True)
    skipped = {problem.name for problem in report.problems}
    if as_json:
        result: dict[str, Any] = {
            "changed": report.changed,
            "new_versions": report.new,
            "fetched": report.fetched,
            "unchanged_by_serial": report.unchanged if report.serials else None,
            "deleted_upstream": report.deleted,
            "problems": [{"project": p.name, "message": p.message} for p in report.problems],
        }
        if listing is not None:
            result["all"] = listing
        click.echo(json.dumps(result, indent=2))
    else:
        if listing is not None and listing["added"] is not None:
            out.print(f"{listing['added']} new project name(s) recorded")
        out.print(
            f"{report.changed} project(s) changed, {report.new} new version(s)"
            + (f", {len(skipped)} project(s) with problems (see above)" if skipped else "")
        )
        if report.serials:
            out.print(f"{report.fetched} page(s) fetched, {report.unchanged} unchanged by their serial")
        if report.deleted:
            out.print(f"marked deleted upstream: {', '.join(report.deleted)}")
    if failed:
        raise UpstreamError("sync --all: the upstream's project list could not be read (see above)")
    if report.problems and report.synced == 0:
        raise UpstreamError(f"sync: no project could be synced from {app.settings.upstream_url}")


def _parse_name(spec: str) -> tuple[str, str | None]:
    name, _, version = spec.partition("==")
    parse_wanted(name, spec)
    return name.strip(), version.strip() or None


@cli.command()
@click.argument("spec", required=False)
@click.option("--all-versions", is_flag=True, help="Every version with an sdist, not only those tried.")
@click.option("--abi", metavar="TAG", help="Only for this ABI (e.g. cp311-cp311-linux_armv7l).")
@click.option("--failed-with", "failed_with", metavar="REASON",
              help="Instead of SPEC: every build that failed with REASON.")  # fmt: skip
@pass_app
def rebuild(app: App, spec: str | None, all_versions: bool, abi: str | None, failed_with: str | None) -> None:
    """Build NAME[==VERSION] again, before everything else (or --failed-with REASON).

    NAME alone rebuilds the versions that were built or failed before; --all-versions every one.
    """
    if (spec is None) == (failed_with is None):
        raise InputError("rebuild: give NAME[==VERSION] or --failed-with REASON (one of them)")
    if failed_with is not None:
        with app.session() as session:
            count = rebuild_failed(session, failed_with)
        out.print(f"{count} build(s) that failed with {failed_with} queued again")
        return
    assert spec is not None
    name, version = _parse_name(spec)
    with app.session() as session:
        result = requeue(session, name, version, all_versions=all_versions, abi=abi)
    for skipped, reason in result.skipped:
        message = f"{name}=={skipped} is skipped ({reason}): 'piwheels-ctl unskip {name}=={skipped}' first"
        err.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if result.queued:
        versions = ", ".join(result.queued)
        out.print(f"{name}: {versions} queued for a rebuild" + (f" for {abi}" if abi else ""))
    elif not result.skipped:
        raise InputError(
            f"{name}: nothing was built or failed before"
            + (f" for {abi}" if abi else "")
            + ": --all-versions queues every version"
        )
    else:
        raise InputError(f"{name}: nothing queued, every version asked for is skipped")


@cli.command()
@click.argument("spec")
@click.option("--reason", required=True, help="Why it must not be built (shown in status).")
@pass_app
def skip(app: App, spec: str, reason: str) -> None:
    """Never build NAME[==VERSION]."""
    name, version = _parse_name(spec)
    with app.session() as session:
        count = projects.skip(session, name, version, reason)
    out.print(f"skipping {name}" + (f"=={version}" if version else f" ({count} version(s))"))


@cli.command()
@click.argument("spec")
@pass_app
def unskip(app: App, spec: str) -> None:
    """Build NAME[==VERSION] again after 'skip' (NAME lifts every skip of the project)."""
    name, version = _parse_name(spec)
    with app.session() as session:
        projects.unskip(session, name, version)
    out.print(f"{name}{'==' + version if version else ''} is built again")


@cli.command()
@click.argument("spec", metavar="NAME[==VERSION]")
@click.argument("old_version", metavar="", required=False)
@pass_app
def logs(app: App, spec: str, old_version: str | None) -> None:
    """Print the logs of the builds of NAME[==VERSION], newest first.

    NAME alone: its newest version with a build.
    """
    name, version = _parse_name(spec)
    version = version or old_version  # ``logs NAME VERSION``, as before, still works
    with app.session() as session:
        _project, versions = projects.find(session, name, version)
        tried = [v for v in versions if v.builds]
        if not tried:
            raise InputError(f"{name}{'==' + version if version else ''}: no builds yet")
        if version is None:
            versions = [max(tried, key=lambda v: version_key(v.version))]
        row = versions[0]
        builds = sorted(row.builds, key=lambda b: (b.started_at, b.id), reverse=True)
        entries = [(b.abi.tag, _state(b), b.failure_reason, b.log_path) for b in builds]
        shown = row.version
    for tag, state, reason, path in entries:
        click.echo(f"==> {name}=={shown} {tag}: {state}" + (f" ({reason})" if reason else ""))
        if path is None:
            click.echo("(no log)")
            continue
        with gzip.open(app.settings.logs_dir / path, "rt", encoding="utf-8", errors="replace") as f:
            sys.stdout.write(f.read())


def _state(build: Build) -> str:
    return f"{build.status.value}, superseded" if build.superseded else build.status.value


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
        placed = import_wheel(db, app.settings.www_dir, wheel)
        renamed = "" if placed.filename == wheel.filename else f" as {placed.filename} (its name was taken)"
        out.print(f"imported {wheel.filename}{renamed}")
