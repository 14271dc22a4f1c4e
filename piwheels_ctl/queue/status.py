"""The farm's figures that ``status`` shows, as plain data: the kept counts, the ABIs built for,
the queue's size and what keeps pairs out of it, and the compiler cache's hit rate, each read
from a kept counter or an index (a few rows whatever the farm's size)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from ..db import counts
from ..db.models import Abi, Build, BuildStatus, Project, UpstreamCoverage, Version
from .claims import count as queue_count
from .claims import no_sdist_query

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


def ccache(session: Session) -> dict[str, Any]:
    """The compiler cache's hits and misses over the newest builds that compiled something."""
    rows = session.execute(ccache_query()).all()
    hits = sum(int(h or 0) for h, _ in rows)
    misses = sum(int(m or 0) for _, m in rows)
    rate = round(100 * hits / (hits + misses), 1) if hits + misses else None
    return {"builds": len(rows), "hits": hits, "misses": misses, "hit_rate": rate}


def figures(session: Session) -> dict[str, Any]:
    """Every figure of ``status`` but the skips the user made (the catalog lists those), by key."""

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
        "ccache": ccache(session),
        # Successful builds cross-built, by target architecture; projects cross builders leave alone.
        "cross_built": {
            str(target): int(n)
            for target, n in session.execute(
                select(Build.cross, func.count())
                .where(Build.cross.is_not(None), Build.status == BuildStatus.SUCCESS)
                .group_by(Build.cross)
                .order_by(Build.cross)
            )
        },
        "native_only": count(select(func.count()).where(Project.native_only.is_not(None))),
    }
