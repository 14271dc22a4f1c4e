"""Check jobs: a compiled file of one OS release loaded by a builder of another, queued like a
build (``ReleaseCheck`` rows, claimed with a lease), and what came of it.

A builder of a release claims that release's pending checks before its builds, and a version
with a check still undecided in a release is not built there: the check decides first whether
the release needs a build of its own (refused) or not (passed: the file covers the release's
pairs it installs on).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Exists, and_, exists, or_, select
from sqlalchemy.orm import Session

from ..abi import wheel_covers
from ..db.models import Abi, File, Project, ReleaseCheck, Version, utcnow
from . import releases, upkeep
from .coverage import abi_tags, cover_checked

# Candidates a claim looks at per query.
CHECK_BATCH = 16
# A message of a check's outcome is kept to this many characters, and so many of them.
MAX_MESSAGE, MAX_MESSAGES = 500, 20


@dataclass(frozen=True)
class CheckJob:
    """One file to load on a builder of ``release``, with the interpreter of ``abi_id``."""

    file_id: int
    release: str
    abi_id: int
    project: str
    version: str
    filename: str
    built_on: str | None


def undecided(version_id: int, release: str) -> Exists:
    """Whether a file of the version waits for a check in ``release``."""
    return (
        exists()
        .where(
            ReleaseCheck.file_id == File.id,
            File.version_id == version_id,
            ReleaseCheck.release == release,
            ReleaseCheck.status.in_([releases.PENDING, releases.CHECKING]),
        )
        .correlate_except(File, ReleaseCheck)
    )


def claim_check(
    session: Session,
    release: str | None,
    abi_ids: Collection[int],
    builder_id: int,
    lease: timedelta,
    now: datetime | None = None,
) -> CheckJob | None:
    """Take the next check of ``release`` one of ``abi_ids`` can load (its tags install there):
    a pending one, or one whose lease expired. Call it in a transaction of its own."""
    if release is None or not abi_ids:
        return None
    now = now or utcnow()
    abis = list(session.scalars(select(Abi).where(Abi.id.in_(sorted(abi_ids))).order_by(Abi.id)))
    claimable = or_(
        ReleaseCheck.status == releases.PENDING,
        and_(ReleaseCheck.status == releases.CHECKING, ReleaseCheck.lease_expires < now),
    )
    query = (
        select(ReleaseCheck, File, Version.version, Project.name)
        .join(File, File.id == ReleaseCheck.file_id)
        .join(Version, Version.id == File.version_id)
        .join(Project, Project.id == Version.project_id)
        .where(ReleaseCheck.release == release, claimable)
        .order_by(Version.priority.desc(), ReleaseCheck.file_id)
        .limit(CHECK_BATCH)
        .with_for_update(of=ReleaseCheck, skip_locked=True)
    )
    offset = 0
    while True:
        rows = session.execute(query.offset(offset)).all()
        for check, file, version, project in rows:
            abi = next((a for a in abis if wheel_covers(file.filename, abi_tags(a))), None)
            if abi is None:
                continue
            check.status, check.builder_id, check.lease_expires = releases.CHECKING, builder_id, now + lease
            return CheckJob(file.id, release, abi.id, project, version, file.filename, file.release)
        if len(rows) < CHECK_BATCH:
            return None
        offset += CHECK_BATCH


def _messages(values: object) -> list[str]:
    items = values if isinstance(values, list) else []
    return [str(v)[:MAX_MESSAGE] for v in items[:MAX_MESSAGES]]


def record_check(session: Session, job: CheckJob, builder_id: int, load_check: dict[str, object]) -> str:
    """Record what the check of ``job`` found (the agent's ``load_check``): ``passed`` (the
    file covers the release's pairs it installs on) or ``refused`` (they stay to be built);
    the project's pages show it. The status recorded, or "" when the check was not ours."""
    check = session.get(ReleaseCheck, (job.file_id, job.release), with_for_update=True)
    if check is None or check.status != releases.CHECKING or check.builder_id != builder_id:
        return ""
    passed = load_check.get("ok") is True
    check.status = releases.PASSED if passed else releases.REFUSED
    check.failures = _messages(load_check.get("failures"))
    check.notes = _messages(load_check.get("notes"))
    check.checked_at, check.lease_expires = utcnow(), None
    session.flush()
    file = session.get(File, job.file_id)
    if file is not None:
        if passed:
            cover_checked(session, file)
        upkeep.touch(session, versions=[file.version_id])
        file.version.project.dirty = True
    return check.status


def hand_back_check(session: Session, job: CheckJob, builder_id: int) -> None:
    """The builder failed the check job (its fault, not the file's): pending again."""
    check = session.get(ReleaseCheck, (job.file_id, job.release), with_for_update=True)
    if check is not None and check.status == releases.CHECKING and check.builder_id == builder_id:
        check.status, check.builder_id, check.lease_expires = releases.PENDING, None, None
