"""Failed builds: list them with their reasons and fixes, and look the fixes up."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db.models import Abi, Build, Builder, BuildStatus, Project, Version
from ..errors import InputError
from .classify import REASONS
from .hints import REASON_KINDS, Hints, HintsError


@dataclass(frozen=True)
class FailedBuild:
    """One failed build that counts (not superseded by a rebuild), as the operator reads it."""

    build_id: int
    name: str
    version: str
    abi: str
    reason: str
    detail: str | None
    evidence: str | None
    packages: list[str] | None  # None: not looked up (or nothing to look up)
    builder: str | None
    duration: float | None
    log_size: int | None  # bytes of the stored (gzipped) log
    started_at: datetime
    retried: str | None = None  # timed out once and built again with a longer limit: how

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["started_at"] = self.started_at.isoformat()
        return data


def check_reason(reason: str, source: str) -> str:
    """``reason`` if it is one of ``REASONS``; else an InputError naming it and the choices."""
    if reason not in REASONS:
        raise InputError(f"{source}: {reason!r} is not a failure reason (one of: {', '.join(REASONS)})")
    return reason


def _log_size(logs_dir: Path, path: str | None) -> int | None:
    if path is None:
        return None
    try:
        return (logs_dir / path).stat().st_size
    except OSError:
        return None


def failed_builds(
    session: Session, logs_dir: Path, name: str | None = None, reason: str | None = None
) -> list[FailedBuild]:
    """The failed builds that count, by project, version and ABI; of one project and/or reason."""
    query = (
        select(Build, Project.name, Version.version, Abi.tag, Builder.name)
        .join(Version, Build.version_id == Version.id)
        .join(Project, Version.project_id == Project.id)
        .join(Abi, Build.abi_id == Abi.id)
        .outerjoin(Builder, Build.builder_id == Builder.id)
        .where(Build.status == BuildStatus.FAILED, Build.superseded.is_(False))
        .order_by(Project.name, Version.id, Abi.tag)
    )
    if name is not None:
        canonical = canonicalize_name(name)
        if session.scalar(select(Project.id).where(Project.name == canonical)) is None:
            raise InputError(f"{name}: not a known project")
        query = query.where(Project.name == canonical)
    if reason is not None:
        query = query.where(Build.failure_reason == check_reason(reason, "--reason"))
    return [
        FailedBuild(
            build_id=build.id,
            name=project,
            version=version,
            abi=abi,
            reason=build.failure_reason or "other",
            detail=build.failure_detail,
            evidence=build.failure_evidence,
            packages=build.failure_packages,
            builder=builder,
            duration=build.duration,
            log_size=_log_size(logs_dir, build.log_path),
            started_at=build.started_at,
            retried=build.retried,
        )
        for build, project, version, abi, builder in session.execute(query).tuples()
    ]


def look_up_packages(hints: Hints, builds: Sequence[FailedBuild]) -> tuple[dict[int, list[str]], list[str]]:
    """The packages for every build not looked up yet, fetching the Contents index if it is
    missing or old: ({build id: packages}, problems). Holds no session: a fetch takes seconds."""
    found: dict[int, list[str]] = {}
    problems: list[str] = []
    for build in builds:
        if build.packages is not None or build.reason not in REASON_KINDS or not build.detail:
            continue
        try:
            packages = hints.packages(build.reason, build.detail, build.abi.split("-")[-1], fetch=True)
        except (HintsError, OSError, sqlite3.Error) as exc:
            problem = f"no package hints: {exc}"
            if problem not in problems:
                problems.append(problem)
            continue
        if packages is not None:
            found[build.build_id] = packages
    return found, problems


def store_packages(session: Session, packages: dict[int, list[str]]) -> None:
    """Record looked-up packages with their builds, so the next listing needs no lookup."""
    for build_id, names in packages.items():
        build = session.get(Build, build_id)
        if build is not None:
            build.failure_packages = names
