"""The commands that look at the farm without changing it: status and queue.

Kept apart from the other commands so that they import only what a query needs (no publisher,
collector or wheel; rich's tables only when a table is printed).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape

from ..catalog import projects
from ..queue.claims import Job, pending, waiting
from ..queue.status import RECENT_BUILDS, figures
from . import App, cli, out, pass_app

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


def _job_dict(job: Job) -> dict[str, Any]:
    return {"name": job.name, "version": job.version, "abi": job.abi, "priority": job.priority}


@cli.command()
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True,
              help="Show at most this many builds.")  # fmt: skip
@click.option("--all", "everything", is_flag=True, help="Show every pending build.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def queue(app: App, limit: int, everything: bool, as_json: bool) -> None:
    """Show what still needs a build, in build order, and the skipped versions."""
    app.refresh_local_builder()
    with app.reader() as session:
        jobs = list(pending(session, limit=None if everything else limit + 1))
        skipped = projects.skipped(session)
        waits = waiting(session, limit=None if everything else limit)
    more = not everything and len(jobs) > limit
    jobs = jobs[:limit] if more else jobs
    if as_json:
        click.echo(json.dumps([_job_dict(j) for j in jobs], indent=2))
        return
    from rich.table import Table  # only for a table on the terminal

    table = Table("project", "version", "ABI", "priority")
    for job in jobs:
        table.add_row(job.name, job.version, job.abi, str(job.priority))
    out.print(table if jobs else "the queue is empty")
    if more:
        out.print(f"only the first {limit} shown: --limit N for more, --all for every one")
    if waits:
        waiting_table = Table("project", "version", "waits for", title="not queued yet")
        for wait in waits:
            waiting_table.add_row(wait.name, wait.version, f"{wait.reason} (wheels only, so far)")
        out.print(waiting_table)
    if skipped:
        out.print(f"skipped ({len(skipped)}; 'piwheels-ctl unskip NAME[==VERSION]' builds them again):")
        for name, version, reason in skipped[:limit]:
            shown = f"{name}=={version}" if version else f"{name} (every version)"
            out.print(f"  {escape(shown)}: {escape(reason)}", highlight=False)


def _status(session: Session) -> dict[str, Any]:
    """What ``status`` shows: the farm's figures, and the skips the user made."""
    skipped = [
        {"project": name, "version": version, "reason": reason}
        for name, version, reason in projects.skipped(session)
    ]
    return {**figures(session), "skipped": skipped}


# What each line of ``status`` counts, in the order shown.
_STATUS_LABELS = {
    "projects": "projects known",
    "watched": "watched (every version)",
    "requested": "asked for by NAME==VERSION",
    "versions": "versions known",
    "abis": "ABIs built for",
    "builds": "builds (and superseded)",
    "failures": "failed builds by reason",
    "files": "wheels in the index",
    "bytes": "size of the wheels",
    "pending": "queue: (version, ABI) pairs",
    "upstream_covered": "covered upstream, not built",
    "mirrored": "mirrored from upstream",
    "skipped": "skipped (unskip to build)",
    "ccache": f"ccache, last {RECENT_BUILDS} builds",
    "cross_built": "cross-built (by target)",
    "native_only": "native only (cross build failed)",
}


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def status(app: App, as_json: bool) -> None:
    """Counts of projects, versions, builds, files and the queue."""
    app.refresh_local_builder()
    with app.session() as session:
        info = _status(session)
    if as_json:
        click.echo(json.dumps(info, indent=2, sort_keys=True))
        return
    from rich.table import Table  # only for a table on the terminal

    from ..files import human_size

    # The labels never wrap; a long value folds onto lines of its own column.
    table = Table(show_header=False)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    for key, label in _STATUS_LABELS.items():
        value = info[key]
        if key == "bytes":
            value = human_size(value)
        elif key == "skipped":
            value = ", ".join(
                f"{s['project']}{'==' + s['version'] if s['version'] else ''} ({s['reason']})" for s in value
            )
        elif key == "ccache":
            value = (
                f"{value['hit_rate']}% hits ({value['hits']} hits, {value['misses']} misses in "
                f"{value['builds']} builds)"
                if value["hit_rate"] is not None
                else "-"
            )
        elif isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(value)
        table.add_row(label, escape(str(value)) or "-")
    out.print(table)
