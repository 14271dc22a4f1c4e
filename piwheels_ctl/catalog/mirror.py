"""Mirror the upstream's own wheels: fetch, check against the upstream's sha256, verify, publish.

A (version, ABI) pair that a wheel on the upstream covers is never queued (upstream_coverage).
With ``mirror_upstream`` on, the controller fetches one such wheel per pair still without a
wheel in our index, through the upstream's bounded HTTP, checks it against the sha256 the
upstream lists, verifies it like a built wheel (collector: RECORD, member paths, size caps) and
publishes it with its ``.metadata``. A wheel that fails verification, or whose fetch fails
``MIRROR_ATTEMPTS`` times, is given up on: its pairs go to the queue and are built.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import and_, exists, false, or_, select, true
from sqlalchemy.orm import Session

from ..config import Settings
from ..db.engine import Database
from ..db.models import Abi, Build, Coverage, File, Project, UpstreamCoverage, UpstreamWheel, Version
from ..errors import UpstreamError, VerifyError
from ..queue.upstream_coverage import give_up

# Finding the candidates is every `run`'s work; fetching one is rare: the HTTP client and the
# wheel checks are imported by whoever has one to fetch.
if TYPE_CHECKING:
    from ..upstream.source import Upstream

# Failed fetches of one wheel (the upstream down, a broken transfer) before its ABIs are built.
MIRROR_ATTEMPTS = 3

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """An upstream wheel that would cover ``pairs`` (version id, ABI id) not yet covered by ours."""

    wheel_id: int
    filename: str
    url: str
    sha256: str
    size: int | None
    project: str
    version: str
    version_id: int
    pairs: frozenset[tuple[int, int]]


@dataclass
class MirrorReport:
    """What one round of mirroring did."""

    mirrored: list[str] = field(default_factory=list)  # file names as placed in our index
    retried: list[tuple[str, str]] = field(default_factory=list)  # (file, error): tried again later
    given_up: list[tuple[str, str]] = field(default_factory=list)  # (file, error): built instead


def candidates(session: Session) -> list[Candidate]:
    """The upstream wheels to fetch, fewest first that cover every pair: per version, a wheel
    covering most of its pairs (then a pure one) before the others, none whose pairs are covered."""
    wanted = (
        select(UpstreamWheel, Project.name, Version.version, UpstreamCoverage.abi_id)
        .join(UpstreamCoverage, UpstreamCoverage.wheel_id == UpstreamWheel.id)
        .join(Version, Version.id == UpstreamWheel.version_id)
        .join(Project, Project.id == Version.project_id)
        .join(Abi, Abi.id == UpstreamCoverage.abi_id)
        .where(
            Abi.active == true(),
            UpstreamWheel.file_id.is_(None),
            UpstreamWheel.given_up == false(),
            or_(Project.watched, Version.priority > 0),
            Project.skip_reason.is_(None),
            Version.skip_reason.is_(None),
            or_(Version.yanked == false(), Version.priority > 0),
            ~exists().where(
                and_(Coverage.version_id == UpstreamCoverage.version_id, Coverage.abi_id == Abi.id)
            ),
            # A build of ours that succeeded or is under way stays the wheel of the pair.
            ~exists().where(
                and_(
                    Build.version_id == UpstreamCoverage.version_id,
                    Build.abi_id == Abi.id,
                    Build.superseded == false(),
                    Build.failure_reason.is_(None),
                )
            ),
        )
        .order_by(Version.id, UpstreamWheel.id)
    )
    found: dict[int, tuple[UpstreamWheel, str, str, set[tuple[int, int]]]] = {}
    for wheel, name, version, abi_id in session.execute(wanted).tuples():
        found.setdefault(wheel.id, (wheel, name, version, set()))[3].add((wheel.version_id, abi_id))
    ordered = sorted(
        found.values(),
        key=lambda item: (item[0].version_id, -len(item[3]), "-none-any" not in item[0].filename),
    )
    chosen: list[Candidate] = []
    covered: set[tuple[int, int]] = set()
    for wheel, name, version, pairs in ordered:
        if pairs <= covered:
            continue
        covered |= pairs
        chosen.append(
            Candidate(
                wheel.id,
                wheel.filename,
                wheel.url,
                wheel.sha256,
                wheel.size,
                name,
                version,
                wheel.version_id,
                frozenset(pairs),
            )
        )
    return chosen


def mirror(
    db: Database,
    settings: Settings,
    upstream: Upstream,
    progress: Callable[[Candidate], None] = lambda _c: None,
    todo: list[Candidate] | None = None,
) -> MirrorReport:
    """Fetch, verify and publish every upstream wheel that covers a pair lacking a wheel of ours
    (``todo``, when the caller has already found them with ``candidates``)."""
    report = MirrorReport()
    if todo is None:
        with db.reader() as session:
            todo = candidates(session)
    if not todo:
        return report
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    for candidate in todo:
        progress(candidate)
        staging = Path(tempfile.mkdtemp(dir=settings.work_dir, prefix="mirror-"))
        try:
            _mirror_one(db, settings, upstream, candidate, staging / candidate.filename, report)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return report


def _mirror_one(
    db: Database,
    settings: Settings,
    upstream: Upstream,
    candidate: Candidate,
    dest: Path,
    report: MirrorReport,
) -> None:
    from ..builds.record import install_files
    from ..builds.verify import inspect_wheel

    limit = settings.mirror_max_mb * 1024 * 1024
    try:
        if candidate.size is not None and candidate.size > limit:
            raise VerifyError(
                f"{candidate.filename}: the upstream lists {candidate.size:,} bytes,"
                f" over mirror_max_mb ({settings.mirror_max_mb})"
            )
        size = upstream.download(
            candidate.url, dest, sha256=candidate.sha256, limit=limit, seconds=settings.mirror_timeout
        )
        wheel = inspect_wheel(
            dest, name=candidate.project, version=candidate.version, size=size, sha256=candidate.sha256
        )
    except VerifyError as exc:  # the wheel itself is wrong: fetching it again changes nothing
        _give_up(db, candidate, str(exc), report)
        return
    except UpstreamError as exc:
        _failed_fetch(db, candidate, str(exc), report)
        return

    def work(session: Session) -> tuple[Version, Build | None]:
        version = session.get(Version, candidate.version_id)
        if version is None:
            raise VerifyError(f"{candidate.filename}: its version is no longer known")
        return version, None

    (placed,) = install_files(db, settings.www_dir, [wheel], work, mirrored=True)
    with db.session() as session:
        row = session.get(UpstreamWheel, candidate.wheel_id)
        if row is not None:
            row.file_id = session.scalar(select(File.id).where(File.filename == placed.filename))
            row.error = None
    report.mirrored.append(placed.filename)
    logger.info("mirrored %s from the upstream", placed.filename)


def _give_up(db: Database, candidate: Candidate, error: str, report: MirrorReport) -> None:
    with db.session() as session:
        give_up(session, candidate.wheel_id, error)
    report.given_up.append((candidate.filename, error))
    logger.warning("%s: not mirrored, its ABIs will be built: %s", candidate.filename, error)


def _failed_fetch(db: Database, candidate: Candidate, error: str, report: MirrorReport) -> None:
    with db.session() as session:
        row = session.get(UpstreamWheel, candidate.wheel_id)
        if row is None:
            return
        row.attempts += 1
        row.error = error
        attempts = row.attempts
    if attempts >= MIRROR_ATTEMPTS:
        _give_up(db, candidate, f"{attempts} fetches failed; the last: {error}", report)
    else:
        report.retried.append((candidate.filename, error))
