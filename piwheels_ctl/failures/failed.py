"""Failed builds: list them with their reasons and fixes, and look the fixes up."""

from __future__ import annotations

import gzip
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
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
    why: list[str] | None  # why each of ``packages`` is listed, in the same order
    builder: str | None
    duration: float | None
    log_size: int | None  # bytes of the stored (gzipped) log
    started_at: datetime
    log_path: str | None = field(default=None, repr=False)
    retried: str | None = None  # timed out once and built again with a longer limit: how

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["log_path"]
        data["started_at"] = self.started_at.isoformat()
        return data


# How much of a log is read to rank package hints (what its -I, .pc and -l name).
LOG_READ_MAX = 8 << 20


def check_reason(reason: str, source: str) -> str:
    """``reason`` if it is one of ``REASONS``; else an InputError naming it and the choices."""
    if reason not in REASONS:
        raise InputError(f"{source}: {reason!r} is not a failure reason (one of: {', '.join(REASONS)})")
    return reason


def suggestions(value: object) -> tuple[list[str] | None, list[str] | None]:
    """(packages, why each is listed) of a build's stored ``failure_packages``: a list of
    {"package", "why"}, or of names alone as recorded before issue 24."""
    if not isinstance(value, list):
        return None, None
    names = [str(v["package"]) if isinstance(v, dict) else str(v) for v in value]
    why = [str(v.get("why", "")) if isinstance(v, dict) else "" for v in value]
    return names, why


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
            packages=suggestions(build.failure_packages)[0],
            why=suggestions(build.failure_packages)[1],
            builder=builder,
            duration=build.duration,
            log_size=_log_size(logs_dir, build.log_path),
            started_at=build.started_at,
            log_path=build.log_path,
            retried=build.retried,
        )
        for build, project, version, abi, builder in session.execute(query).tuples()
    ]


def look_up_packages(
    hints: Hints, builds: Sequence[FailedBuild], logs_dir: Path | None = None
) -> tuple[dict[int, list[dict[str, str]]], list[str]]:
    """The packages for every build not looked up yet, fetching the Contents index if it is
    missing or old: ({build id: [{"package", "why"}]}, problems); ranked by what each build's log
    names (in ``logs_dir``). Holds no session: a fetch takes seconds."""
    found: dict[int, list[dict[str, str]]] = {}
    problems: list[str] = []
    for build in builds:
        if build.packages is not None or build.reason not in REASON_KINDS or not build.detail:
            continue
        try:
            text = _read_log(logs_dir, build.log_path) if logs_dir is not None else ""
            packages = hints.suggest(
                build.reason, build.detail, build.abi.split("-")[-1], fetch=True, text=text
            )
        except (HintsError, OSError, sqlite3.Error) as exc:
            problem = f"no package hints: {exc}"
            if problem not in problems:
                problems.append(problem)
            continue
        if packages is not None:
            found[build.build_id] = packages
    return found, problems


def _read_log(logs_dir: Path, path: str | None) -> str:
    """A stored (gzipped) log's text, "" when it cannot be read: it only ranks the hints."""
    if not path:
        return ""
    try:
        with gzip.open(logs_dir / path, "rt", encoding="utf-8", errors="replace") as stream:
            return stream.read(LOG_READ_MAX)
    except (OSError, EOFError):
        return ""


def store_packages(session: Session, packages: dict[int, list[dict[str, str]]]) -> None:
    """Record looked-up packages with their builds, so the next listing needs no lookup."""
    for build_id, names in packages.items():
        build = session.get(Build, build_id)
        if build is not None:
            build.failure_packages = names
