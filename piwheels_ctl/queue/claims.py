"""The build queue: which (version, ABI) pairs still need a build, in what order, and claiming them."""

from __future__ import annotations

import os
import socket
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, bindparam, delete, exists, false, func, or_, select, true
from sqlalchemy.orm import Session

from ..db.batches import in_batches
from ..db.models import (
    Abi,
    Build,
    Builder,
    BuildStatus,
    Coverage,
    PendingPair,
    Project,
    UpstreamCoverage,
    Version,
    utcnow,
)
from . import checks, releases, upkeep

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


def queue_query(*, abi_ids: Collection[int] | None = None, claimable: bool = False) -> Select[Any]:
    """The pending pairs, highest priority and newest release first (an index's order).

    With ``claimable``, versions that are being built for another ABI wait: their wheel may
    turn out to cover this ABI too (a pure-Python project is built once).
    """
    query: Select[Any] = (
        select(
            PendingPair.version_id,
            PendingPair.abi_id,
            Project.name,
            Version.version,
            Abi.tag,
            Version.priority,
            Version.sdist_url,
            Version.sdist_sha256,
            PendingPair.priority,
            PendingPair.sort_time,
            Project.native_only,
        )
        .join_from(PendingPair, Version, Version.id == PendingPair.version_id)
        .join_from(Version, Project, Version.project_id == Project.id)
        .join_from(PendingPair, Abi, Abi.id == PendingPair.abi_id)
        .order_by(
            PendingPair.priority.desc(),
            PendingPair.sort_time.desc(),
            PendingPair.version_id.desc(),
            PendingPair.abi_id,
        )
    )
    if abi_ids is not None:
        query = query.where(PendingPair.abi_id.in_(list(abi_ids)))
    if claimable:
        query = query.where(
            ~exists().where(Build.version_id == PendingPair.version_id, Build.status == BuildStatus.BUILDING)
        )
    return query


def count(session: Session) -> int:
    """How many (version, ABI) pairs are pending."""
    upkeep.apply(session)
    return session.scalar(select(func.count()).select_from(PendingPair)) or 0


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
            # The inner tests name the version of the outermost query (correlated explicitly:
            # left to itself, SQLAlchemy would read every version there).
            exists().where(
                Abi.active == true(),
                ~exists()
                .where(Coverage.version_id == Version.id, Coverage.abi_id == Abi.id)
                .correlate(Version, Abi),
                ~exists()
                .where(UpstreamCoverage.version_id == Version.id, UpstreamCoverage.abi_id == Abi.id)
                .correlate(Version, Abi),
            ),
        )
        .order_by(Version.release_time.desc().nulls_last(), Version.id.desc())
    )


def waiting(session: Session, limit: int | None = None) -> list[Waiting]:
    """The versions that wait for an sdist (see ``no_sdist_query``)."""
    query = no_sdist_query() if limit is None else no_sdist_query().limit(limit)
    return [Waiting(name, version) for name, version in session.execute(query)]


def _job(row: Any) -> Job:
    version_id, abi_id, name, version, tag, priority, url, sha256 = row[:8]
    return Job(version_id, abi_id, name, version, tag, priority, url, sha256)


def pending(
    session: Session,
    *,
    abi_ids: Collection[int] | None = None,
    claimable: bool = False,
    limit: int | None = None,
) -> Iterator[Job]:
    """Pending jobs in queue order."""
    upkeep.apply(session)
    query = queue_query(abi_ids=abi_ids, claimable=claimable)
    if limit is not None:
        query = query.limit(limit)
    result = session.execute(query.execution_options(yield_per=500))
    try:
        for row in result:
            yield _job(row)
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


def _place(row: Any) -> tuple[int, datetime, int, int]:
    """A row's place in the queue, first the largest (of rows of ``queue_query``)."""
    return row[8], row[9], row[0], -row[1]


def claim_query(offset: int = 0) -> Select[Any]:
    """The claimable pairs of the ABI ``abi`` (a parameter) from ``offset`` on, in queue order,
    their versions locked (PostgreSQL: those locked by another claim skipped)."""
    return (
        queue_query(claimable=True)
        .where(PendingPair.abi_id == bindparam("abi"))
        .limit(CLAIM_BATCH)
        .offset(offset)
        .with_for_update(of=Version, skip_locked=True)
    )


def _takes(row: Any, cross_abis: Collection[int], cross_served: Collection[int]) -> bool:
    """Whether a builder takes this pair: a cross builder (``cross_abis``) no project recorded as
    native only; a native one, for an ABI a cross builder serves (``cross_served``), only those."""
    abi_id, native_only = row[1], row[10]
    if abi_id in cross_abis:
        return native_only is None
    return abi_id not in cross_served or native_only is not None


def claim_next(
    session: Session,
    abi_ids: Collection[int],
    builder_id: int | None,
    lease: timedelta,
    cross_abis: Mapping[int, str] | None = None,
    cross_served: Collection[int] = (),
) -> tuple[Job, Build] | None:
    """Take the next claimable job for one of ``abi_ids``: find it and record its build as one
    step that no other controller can interleave with (None: nothing to claim).

    Each ABI's first pairs are one indexed statement (the same one, for each ABI); the first of
    them all is taken. Call it in a transaction of its own. SQLite: the session holds the write
    lock from its BEGIN IMMEDIATE, so claims are one at a time. PostgreSQL: the version's row
    is locked FOR UPDATE, versions another claim holds are skipped, and the pair is checked
    again after the lock is held. The builder cross-builds ``cross_abis``: it takes no project
    recorded as native only there; for ``cross_served`` (ABIs a cross builder serves in this
    run), a native builder takes only those (``_takes``): cross builders are preferred.
    """
    upkeep.apply(session)
    cross_abis = cross_abis or {}
    abis = sorted(set(abi_ids))
    builder = session.get(Builder, builder_id) if builder_id is not None else None
    release = releases.release_of(builder.info) if builder is not None else None
    offset = 0
    while True:
        first = claim_query(offset)
        batches = [session.execute(first, {"abi": abi}).all() for abi in abis]
        for row in sorted((row for batch in batches for row in batch), key=_place, reverse=True):
            if not _takes(row, cross_abis, cross_served):
                continue
            job = _job(row)
            # A check of a file of the version in this release decides first whether it is needed.
            if release is not None and session.scalar(select(checks.undecided(job.version_id, release))):
                continue
            if _still_pending(session, job.version_id, job.abi_id):
                build = claim(session, job, builder_id, lease)
                build.cross = cross_abis.get(job.abi_id)
                return job, build
        if all(len(batch) < CLAIM_BATCH for batch in batches):
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
    stale = stale_builds(session, now)
    if stale:
        upkeep.touch(session, versions=[build.version_id for build in stale])
        for batch in in_batches([build.id for build in stale]):
            session.execute(delete(Build).where(Build.id.in_(batch)))
    return len(stale)
