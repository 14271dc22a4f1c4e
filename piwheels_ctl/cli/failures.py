"""The `failures` command: failed builds with their reasons, evidence and the packages that fix them."""

from __future__ import annotations

import json

import click
from rich.markup import escape

from ..db.builder_os import farm_debian_source
from ..failures.failed import FailedBuild, failed_builds, look_up_packages, store_packages
from ..failures.hints import ContentsIndex, Hints
from . import App, cli, err, out, pass_app


def _size(size: int | None) -> str:
    if size is None:
        return "-"
    return f"{size / 1024:.1f} KiB" if size >= 1024 else f"{size} B"


def _hints(app: App) -> Hints:
    s = app.settings
    with app.reader() as session:  # the builders' release, where they agree and debian_suite is auto
        mirror, suite = farm_debian_source(session, s) or (None, None)
    return Hints(s.contents_dir, mirror, suite, max_age_days=s.contents_max_days, timeout=s.http_timeout)


@cli.command()
@click.argument("name", required=False)
@click.option("--reason", help="Only the failures with this reason (e.g. missing-header).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.option("--no-hints", is_flag=True,
              help="Do not look up the packages that fix a failure (no Contents index fetch).")  # fmt: skip
@pass_app
def failures(app: App, name: str | None, reason: str | None, as_json: bool, no_hints: bool) -> None:
    """List failed builds (of NAME) with reason, detail, suggested Debian packages, builder,
    duration and log size.

    The packages come from the Contents index of the Debian mirror (setting debian_mirror),
    fetched when missing or older than contents_max_days (half a minute; --no-hints skips the
    lookup).
    """
    logs_dir = app.settings.logs_dir
    with app.reader() as session:
        builds = failed_builds(session, logs_dir, name, reason)
    if not no_hints and builds:
        hints = _hints(app)
        hints.on_fetch = _say_fetching
        with err.status("looking up the packages that fix them (Contents index)"):
            found, problems = look_up_packages(hints, builds, logs_dir)
        for problem in problems:
            err.print(f"[yellow]warning:[/] {escape(problem)}", highlight=False, soft_wrap=True)
        if found:
            with app.session() as session:
                store_packages(session, found)
            with app.reader() as session:
                builds = failed_builds(session, logs_dir, name, reason)
    if as_json:
        click.echo(json.dumps([b.as_json() for b in builds], indent=2))
        return
    if not builds:
        out.print("no failed builds")
        return
    _print(builds)


def _say_fetching(index: ContentsIndex) -> None:
    # A line of its own, on a terminal or not: the fetch is silent for half a minute.
    err.print(
        f"fetching the Debian Contents index of {index.suite} {index.arch} (once; it takes about"
        " half a minute; --no-hints skips the package lookup)",
        highlight=False,
        soft_wrap=True,
    )


def _print(builds: list[FailedBuild]) -> None:
    """One block per build, readable at any width: what failed, why, what fixes it."""
    for b in builds:
        detail = f" ({escape(b.detail)})" if b.detail else ""
        out.print(
            f"[bold]{escape(b.name)} {escape(b.version)}[/] {b.abi}: [red]{b.reason}[/]{detail}",
            soft_wrap=True,
        )
        if b.packages:
            out.print(f"    install: {escape(b.packages[0])}", soft_wrap=True)
            for package, why in zip(b.packages, b.why or [""] * len(b.packages), strict=False):
                note = f": {escape(why)}" if why else ""
                out.print(f"      {escape(package)}{note}", soft_wrap=True, highlight=False)
        if b.evidence:
            out.print(f"    evidence: {escape(b.evidence)}", soft_wrap=True, highlight=False)
        duration = f"{b.duration:.0f}s" if b.duration is not None else "-"
        out.print(
            f"    builder {escape(b.builder or '-')}, {duration}, log {_size(b.log_size)}", highlight=False
        )
    out.print(f"{len(builds)} failed build(s); 'piwheels-ctl logs NAME==VERSION' shows a log")
