"""The farm's figures for the front page and the statistics page, and those pages rendered.

Only reads and renders; ``publisher`` writes the result. Charts are SVG drawn now (``charts``).
"""

from __future__ import annotations

import string
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, exists, func, or_, select
from sqlalchemy.orm import Session

from ..db import counts
from ..db.builder_os import builder_os
from ..db.models import Abi, Build, Builder, BuildStatus, Project, Version, utcnow
from ..queue import claims
from . import charts
from .templating import templates

DAYS = 30  # how far back the charts look
# The lists of projects, by the first character of their canonical names ("0": a digit).
INITIALS = ("0", *string.ascii_lowercase)


@dataclass
class BuilderRow:
    name: str
    abis: list[str]
    healthy: bool
    last_build: str | None
    os: str = "unknown"  # "debian bookworm", as the builder said at its last probe
    arch: str | None = None  # the userland's Debian architecture (armhf, arm64, amd64)
    glibc: str | None = None


@dataclass
class SiteStats:
    """What the front page and the statistics page show."""

    generated: str
    projects: int
    versions: int
    wheels: int
    bytes: int
    builds_hour: int
    builds_day: int
    queue: int
    success: list[tuple[str, int, int]]  # (ABI, ok, failed) of the current builds
    builders: list[BuilderRow]
    # initial -> (canonical, display) of its projects with a page, for the lists to write
    names: dict[str, list[tuple[str, str]]]
    charts: dict[str, str] = field(default_factory=dict)  # name -> SVG text


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M UTC")


def initial(name: str) -> str:
    """The list of projects a canonical name is on: its first letter, or "0" for a digit."""
    return "0" if name[0].isdigit() else name[0]


def lists_query(initials: Collection[str]) -> Select[tuple[str, str]]:
    """The (canonical, display) names of the projects with a page on the lists of ``initials``:
    each list one range of the index on names, bounded by the next initial, never by a
    character a database's collation might ignore (PostgreSQL's en_US sorts ":" first)."""
    has_page = exists().where(Version.project_id == Project.id)
    ranges = []
    for first in initials:
        after = INITIALS[INITIALS.index(first) + 1 :]
        ranges.append(
            and_(Project.name >= first, Project.name < after[0]) if after else Project.name >= first
        )
    return select(Project.name, Project.display_name).where(or_(*ranges), has_page).order_by(Project.name)


def load_stats(session: Session, now: datetime | None = None, *, initials: Collection[str] = ()) -> SiteStats:
    """Every figure of the pages, from one read of the database, and the projects with a page
    of the lists of ``initials`` (each an index range of names: a few rows of a big farm)."""
    now = now or utcnow()

    def count(query: Any) -> int:
        return int(session.scalar(query) or 0)

    finished = Build.status != BuildStatus.BUILDING
    names: dict[str, list[tuple[str, str]]] = {first: [] for first in sorted(initials)}
    if names:
        for name, display in session.execute(lists_query(names)).tuples():
            names[initial(name)].append((name, display))
    kept = counts.read(session)
    tags = dict(session.execute(select(Abi.id, Abi.tag)).tuples().all())
    per_abi: dict[str, list[int]] = {}
    for name, number in kept.items():
        kind, _, rest = name.partition(":")
        if kind == "abi":
            abi_id, _, status = rest.partition(":")
            ok = status == BuildStatus.SUCCESS.value
            per_abi.setdefault(tags[int(abi_id)], [0, 0])[0 if ok else 1] += number
    # Each builder's newest build, from the end of the index on (builder, started): a few rows.
    newest = select(func.max(Build.started_at)).where(Build.builder_id == Builder.id).scalar_subquery()
    last = dict(session.execute(select(Builder.id, newest)).tuples().all())
    builders = []
    for b in session.scalars(select(Builder).order_by(Builder.name)):
        said = builder_os(b)
        cross = b.info.get("cross") or {}
        builders.append(
            BuilderRow(
                name=b.name,
                # A cross-built ABI with its mark: "cp311-cp311-linux_armv7l (cross armhf)".
                abis=sorted(
                    p.abi.tag + (f" (cross {cross[p.abi.tag]})" if p.abi.tag in cross else "")
                    for p in b.pythons
                ),
                healthy=b.healthy,
                last_build=_stamp(last[b.id]) if last.get(b.id) else None,
                os=said.describe() if said else "unknown",
                arch=said.arch if said else None,
                glibc=said.glibc if said else None,
            )
        )
    stats = SiteStats(
        generated=_stamp(now),
        projects=kept.get("pages", 0),
        versions=kept.get("versions", 0),
        wheels=kept.get("files", 0),
        bytes=kept.get("bytes", 0),
        builds_hour=count(select(func.count()).where(finished, Build.started_at >= now - timedelta(hours=1))),
        builds_day=count(select(func.count()).where(finished, Build.started_at >= now - timedelta(days=1))),
        queue=claims.count(session),
        success=[(tag, ok, bad) for tag, (ok, bad) in sorted(per_abi.items())],
        builders=builders,
        names=names,
    )
    stats.charts = _charts(session, now, kept)
    return stats


def _charts(session: Session, now: datetime, kept: dict[str, int]) -> dict[str, str]:
    """Builds per day, success rate per ABI per day, and failed builds per reason (of the
    current builds, from the ``kept`` counts)."""
    start = (now - timedelta(days=DAYS - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    days = [(start + timedelta(days=i)).date() for i in range(DAYS)]
    labels = [d.strftime("%m-%d") for d in days]
    index = {d: i for i, d in enumerate(days)}
    ok, failed = [0] * DAYS, [0] * DAYS
    per_abi: dict[str, list[list[int]]] = {}
    rows = session.execute(
        select(Build.started_at, Build.status, Abi.tag)
        .join(Abi, Abi.id == Build.abi_id)
        .where(Build.status != BuildStatus.BUILDING, Build.started_at >= start)
    )
    for started, status, tag in rows:
        i = index.get(started.date())
        if i is None:
            continue
        good = status is BuildStatus.SUCCESS
        (ok if good else failed)[i] += 1
        cells = per_abi.setdefault(tag, [[0, 0] for _ in days])
        cells[i][0 if good else 1] += 1
    rates = [
        (tag, [100.0 * c[0] / (c[0] + c[1]) if c[0] + c[1] else None for c in cells])
        for tag, cells in sorted(per_abi.items())
    ]
    reasons = [(name.removeprefix("reason:"), n) for name, n in kept.items() if name.startswith("reason:")]
    return {
        "builds": charts.stacked_bars(
            f"Builds per day (last {DAYS} days)", labels, [("built", ok), ("failed", failed)]
        ).svg(),
        "success": charts.lines(f"Success rate per ABI (last {DAYS} days)", labels, rates).svg(),
        "reasons": charts.horizontal_bars(
            "Failed builds by reason", [(r or "unknown", n) for r, n in reasons]
        ).svg(),
    }


def render_site(stats: SiteStats, site: dict[str, Any]) -> dict[str, bytes]:
    """The front page, the statistics page, the index of the lists of projects and the lists of
    ``stats.names``, by path."""
    lists: dict[str, dict[str, Any]] = {"project/index.html": {"current": None, "listed": []}}
    for first, listed in stats.names.items():
        lists[f"project/index-{first}.html"] = {"current": first, "listed": listed}
    pages = {
        "index.html": ("front.html.j2", "", {}),
        "stats/index.html": ("stats.html.j2", "../", {}),
        **{path: ("projects.html.j2", "../", extra) for path, extra in lists.items()},
    }
    return {
        path: templates.get_template(template)
        .render(stats=stats, site=site, root=root, initials=INITIALS, **extra)
        .encode("utf-8")
        for path, (template, root, extra) in pages.items()
    }
