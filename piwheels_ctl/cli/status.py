"""The commands that look at the farm without changing it: status and queue.

Kept apart from the other commands so that they import only what a query needs (no publisher,
collector or wheel; rich's tables only when a table is printed).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape
from sqlalchemy import func, select

from ..catalog import projects
from ..db import counts
from ..db.models import Abi, Build, BuildStatus, UpstreamCoverage, Version
from ..queue.claims import Job, no_sdist_query, pending, waiting
from ..queue.claims import count as queue_count
from . import App, cli, out, pass_app

if TYPE_CHECKING:
    from sqlalchemy import Select
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


# How many of the newest builds that compiled something the compiler cache figure covers.
RECENT_BUILDS = 100


def ccache_query() -> Select[tuple[int | None, int | None]]:
    """The newest builds that compiled something, read from their partial index."""
    return (
        select(Build.ccache_hits, Build.ccache_misses)
        .where(Build.ccache_hits.is_not(None))
        .order_by(Build.id.desc())
        .limit(RECENT_BUILDS)
    )


def _ccache(session: Session) -> dict[str, Any]:
    """The compiler cache's hits and misses over the newest builds that compiled something."""
    rows = session.execute(ccache_query()).all()
    hits = sum(int(h or 0) for h, _ in rows)
    misses = sum(int(m or 0) for _, m in rows)
    rate = round(100 * hits / (hits + misses), 1) if hits + misses else None
    return {"builds": len(rows), "hits": hits, "misses": misses, "hit_rate": rate}


def _status(session: Session) -> dict[str, Any]:
    def count(query: Any) -> int:
        return int(session.scalar(query) or 0)

    kept = counts.read(session)
    building = count(select(func.count()).where(Build.status == BuildStatus.BUILDING))
    builds = {status.value: kept.get(f"builds:{status.value}", 0) for status in BuildStatus}
    reasons = {
        name.removeprefix("failed:") or None: v for name, v in kept.items() if name.startswith("failed:")
    }
    return {
        "projects": kept.get("projects", 0),
        "watched": kept.get("watched", 0),
        "versions": kept.get("versions", 0),
        "abis": [a.tag for a in session.scalars(select(Abi).where(Abi.active).order_by(Abi.tag))],
        "builds": {**builds, BuildStatus.BUILDING.value: building},
        "failures": {str(k): v for k, v in sorted(reasons.items(), key=lambda kv: str(kv[0]))},
        "files": kept.get("files", 0),
        "bytes": kept.get("bytes", 0),
        "pending": queue_count(session),
        "requested": count(select(func.count(func.distinct(Version.project_id))).where(Version.priority > 0)),
        "skipped": [
            {"project": name, "version": version, "reason": reason}
            for name, version, reason in projects.skipped(session)
        ],
        "no_sdist": count(select(func.count()).select_from(no_sdist_query().subquery())),
        "upstream_covered": count(
            select(func.count()).select_from(
                select(UpstreamCoverage.version_id, UpstreamCoverage.abi_id)
                .join(Abi, Abi.id == UpstreamCoverage.abi_id)
                .where(Abi.active)
                .distinct()
                .subquery()
            )
        ),
        "mirrored": kept.get("mirrored", 0),
        "ccache": _ccache(session),
    }


# What each line of ``status`` counts, in the order shown.
_STATUS_LABELS = {
    "projects": "projects known (names from sync --all included)",
    "watched": "watched: every version is built",
    "requested": "with versions asked for by NAME==VERSION",
    "versions": "versions known",
    "abis": "ABIs built for",
    "builds": "builds (current and superseded)",
    "failures": "failed builds by reason",
    "files": "wheels in the index",
    "bytes": "bytes of wheels",
    "pending": "queue: (version, ABI) pairs to build",
    "upstream_covered": "(version, ABI) pairs the upstream's own wheels cover: not built",
    "mirrored": "wheels mirrored from the upstream",
    "skipped": "skipped (unskip NAME[==VERSION])",
    "ccache": f"compiler cache over the newest {RECENT_BUILDS} builds that compiled",
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

    table = Table(show_header=False)
    for key, label in _STATUS_LABELS.items():
        value = info[key]
        if key == "skipped":
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
