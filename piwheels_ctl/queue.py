"""The build queue: which (version, ABI) pairs still need a build, in what order, and claiming them."""

from __future__ import annotations

import os
import socket
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from sqlalchemy import Select, and_, delete, exists, false, or_, select, true
from sqlalchemy.orm import Session, aliased

from .abi import AbiTags
from .models import Abi, Build, BuildStatus, Coverage, Project, UpstreamCoverage, Version, utcnow

# Candidates a claim looks at per query; on PostgreSQL it locks their versions until it commits.
CLAIM_BATCH = 8


@dataclass(frozen=True)
class Job:
    """One (version, ABI) pair to build."""

    version_id: int
    abi_id: int
    name: str
    version: str
    abi: str
    priority: int
    sdist_url: str | None = None  # what the agent downloads and checks before the build
    sdist_sha256: str | None = None


def runs_on(requires_python: str | None, abi: AbiTags) -> bool:
    if not requires_python:
        return True
    try:
        spec = SpecifierSet(requires_python)
    except InvalidSpecifier:
        return True  # pip ignores a broken Requires-Python as well; let the build decide
    major, minor = abi.version
    # The ABI knows its minor version only: stand for the newest patch release of it.
    return spec.contains(f"{major}.{minor}.999", prereleases=True)


def pending_query(*, abi_ids: Collection[int] | None = None, claimable: bool = False) -> Select[Any]:
    """The pending pairs, highest priority and newest release first.

    With ``claimable``, versions that are being built for another ABI wait: their wheel may
    turn out to cover this ABI too (a pure-Python project is built once).
    """
    other = aliased(Build)
    query: Select[Any] = (
        select(
            Version.id,
            Abi.id,
            Project.name,
            Version.version,
            Abi.tag,
            Version.priority,
            Version.requires_python,
            Abi.python_tag,
            Abi.abi_tag,
            Abi.platform_tag,
            Version.sdist_url,
            Version.sdist_sha256,
        )
        .join_from(Version, Project, Version.project_id == Project.id)
        .join_from(Version, Abi, Abi.active == true())
        .where(
            or_(Project.watched, Version.priority > 0),
            Project.skip_reason.is_(None),
            Version.skip_reason.is_(None),
            Version.sdist_url.is_not(None),
            or_(Version.yanked == false(), Version.priority > 0),
            ~exists().where(Coverage.version_id == Version.id, Coverage.abi_id == Abi.id),
            ~exists().where(UpstreamCoverage.version_id == Version.id, UpstreamCoverage.abi_id == Abi.id),
            ~exists().where(
                Build.version_id == Version.id, Build.abi_id == Abi.id, Build.superseded == false()
            ),
        )
        .order_by(
            Version.priority.desc(),
            Version.release_time.desc().nulls_last(),
            Version.id.desc(),
            Abi.id,
        )
    )
    if abi_ids is not None:
        query = query.where(Abi.id.in_(list(abi_ids)))
    if claimable:
        query = query.where(
            ~exists().where(and_(other.version_id == Version.id, other.status == BuildStatus.BUILDING))
        )
    return query


@dataclass(frozen=True)
class Waiting:
    """A version that would be pending but has no sdist yet: it waits as ``no-sdist``."""

    name: str
    version: str
    reason: str = "no-sdist"


def no_sdist_query() -> Select[Any]:
    """Tracked versions without an sdist that some active ABI still needs, newest first.

    Maintainers often upload wheels first and the sdist later: such a version is not a failure,
    and the sync that records its sdist makes it pending.
    """
    return (
        select(Project.name, Version.version)
        .join_from(Version, Project, Version.project_id == Project.id)
        .where(
            or_(Project.watched, Version.priority > 0),
            Project.skip_reason.is_(None),
            Version.skip_reason.is_(None),
            Version.sdist_url.is_(None),
            or_(Version.yanked == false(), Version.priority > 0),
            exists().where(
                Abi.active == true(),
                ~exists().where(Coverage.version_id == Version.id, Coverage.abi_id == Abi.id),
                ~exists().where(UpstreamCoverage.version_id == Version.id, UpstreamCoverage.abi_id == Abi.id),
            ),
        )
        .order_by(Version.release_time.desc().nulls_last(), Version.id.desc())
    )


def waiting(session: Session, limit: int | None = None) -> list[Waiting]:
    """The versions that wait for an sdist (see ``no_sdist_query``)."""
    query = no_sdist_query() if limit is None else no_sdist_query().limit(limit)
    return [Waiting(name, version) for name, version in session.execute(query)]


def _job(row: Any) -> Job | None:
    """The job of a row of ``pending_query``; None if its Requires-Python excludes the ABI."""
    version_id, abi_id, name, version, tag, priority, requires, py, abi_tag, plat, url, sha256 = row
    if not runs_on(requires, AbiTags(py, abi_tag, plat)):
        return None
    return Job(version_id, abi_id, name, version, tag, priority, url, sha256)


def pending(
    session: Session,
    *,
    abi_ids: Collection[int] | None = None,
    claimable: bool = False,
    limit: int | None = None,
) -> Iterator[Job]:
    """Pending jobs in queue order, leaving out ABIs a version's Requires-Python excludes."""
    count = 0
    query = pending_query(abi_ids=abi_ids, claimable=claimable)
    result = session.execute(query.execution_options(yield_per=500))
    try:
        for row in result:
            job = _job(row)
            if job is None:
                continue
            yield job
            count += 1
            if limit is not None and count >= limit:
                return
    finally:
        result.close()  # a server-side cursor on PostgreSQL: close it even if not read to the end


def lease_owner() -> str:
    """Who holds a lease: this controller process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def claim(session: Session, job: Job, builder_id: int | None, lease: timedelta) -> Build:
    """Record that ``builder_id`` builds ``job`` until the lease expires (no check: see claim_next)."""
    now = utcnow()
    build = Build(
        version_id=job.version_id,
        abi_id=job.abi_id,
        builder_id=builder_id,
        status=BuildStatus.BUILDING,
        started_at=now,
        lease_expires=now + lease,
        lease_owner=lease_owner(),
    )
    session.add(build)
    session.flush()
    return build


def _still_pending(session: Session, version_id: int, abi_id: int) -> bool:
    """Whether the pair is still claimable, seen by a statement of its own (a fresh snapshot on
    PostgreSQL, where the query that found it may have started before another claim committed)."""
    taken = or_(
        exists().where(Coverage.version_id == version_id, Coverage.abi_id == abi_id),
        exists().where(UpstreamCoverage.version_id == version_id, UpstreamCoverage.abi_id == abi_id),
        exists().where(
            Build.version_id == version_id,
            or_(
                and_(Build.abi_id == abi_id, Build.superseded == false()),
                Build.status == BuildStatus.BUILDING,
            ),
        ),
    )
    return not session.scalar(select(taken))


def claim_next(
    session: Session, abi_ids: Collection[int], builder_id: int | None, lease: timedelta
) -> tuple[Job, Build] | None:
    """Take the next claimable job for one of ``abi_ids``: find it and record its build as one
    step that no other controller can interleave with (None: nothing to claim).

    Call it in a transaction of its own. SQLite: the session holds the write lock from its
    BEGIN IMMEDIATE, so claims are one at a time. PostgreSQL: the version's row is locked FOR
    UPDATE, versions another claim holds are skipped, and the pair is checked again after the
    lock is held.
    """
    offset = 0
    while True:
        query = (
            pending_query(abi_ids=abi_ids, claimable=True)
            .limit(CLAIM_BATCH)
            .offset(offset)
            .with_for_update(of=Version, skip_locked=True)
        )
        rows = session.execute(query).all()
        for row in rows:
            job = _job(row)
            if job is None or not _still_pending(session, job.version_id, job.abi_id):
                continue
            return job, claim(session, job, builder_id, lease)
        if len(rows) < CLAIM_BATCH:
            return None
        offset += CLAIM_BATCH


def _owner_alive(owner: str | None) -> bool:
    host, _, pid = (owner or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine's controller: only its lease expiry can tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_builds(session: Session, now: datetime | None = None) -> list[Build]:
    """Builds in progress whose lease expired or whose controller on this host is gone."""
    now = now or utcnow()
    return [
        build
        for build in session.scalars(select(Build).where(Build.status == BuildStatus.BUILDING))
        if (build.lease_expires is not None and build.lease_expires < now)
        or not _owner_alive(build.lease_owner)
    ]


def reclaim(session: Session, now: datetime | None = None) -> int:
    """Hand back stale builds: their jobs are pending again."""
    stale = [build.id for build in stale_builds(session, now)]
    if stale:
        session.execute(delete(Build).where(Build.id.in_(stale)))
    return len(stale)
