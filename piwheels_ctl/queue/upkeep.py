"""The queue's rows (``PendingPair``) kept in step with the rows that decide them.

A (version, ABI) pair is pending when the version is tracked (its project watched, or the
version asked for), neither is skipped, it has an sdist, it is not yanked (unless asked for),
the ABI is active, no wheel of ours nor of the upstream covers the pair, no counting build of
it exists, and the version's Requires-Python lets the ABI install it.

Every flush notes the versions, projects and ABIs whose rows changed (``after_flush``); the
pairs of those are computed again, in SQL, before the session commits and before the queue is
read in it (``apply``). Statements that change such rows in bulk, which a flush does not see,
call ``touch`` with what they changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from sqlalchemy import (
    ColumnElement,
    and_,
    delete,
    event,
    exists,
    false,
    func,
    insert,
    literal,
    or_,
    select,
    true,
)
from sqlalchemy.orm import Session, UOWTransaction, attributes, sessionmaker

from ..abi import AbiTags, runs_on
from ..db.batches import in_batches
from ..db.models import (
    Abi,
    Build,
    Coverage,
    File,
    PendingPair,
    Project,
    UpstreamCoverage,
    UpstreamWheel,
    UTCDateTime,
    Version,
)

# Stands for "no release time" in the queue's order, where such versions come last.
NO_TIME = datetime(1, 1, 1, tzinfo=timezone.utc)

_KEY = "piwheels_queue_upkeep"


@dataclass
class _Changes:
    versions: set[int] = field(default_factory=set)
    projects: set[int] = field(default_factory=set)
    abis: set[int] = field(default_factory=set)
    # (version, ABI) pairs that a new build took: out of the queue, nothing else changes.
    taken: set[tuple[int, int]] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.versions or self.projects or self.abis or self.taken)


def _changes(session: Session) -> _Changes:
    changes = session.info.get(_KEY)
    if changes is None:
        changes = session.info[_KEY] = _Changes()
    return changes


def touch(
    session: Session,
    *,
    versions: Iterable[int] = (),
    projects: Iterable[int] = (),
    abis: Iterable[int] = (),
) -> None:
    """Note that what decides the pairs of these versions, projects' versions or ABIs changed."""
    changes = _changes(session)
    changes.versions.update(versions)
    changes.projects.update(projects)
    changes.abis.update(abis)


def _changed(obj: object, *names: str) -> bool:
    state = attributes.instance_state(obj)
    return any(state.attrs[name].history.has_changes() for name in names)


# The columns of a version or project that decide whether its pairs are pending.
_VERSION_KEYS = ("priority", "release_time", "yanked", "skip_reason", "sdist_url", "requires_python")
_PROJECT_KEYS = ("watched", "skip_reason")


def _after_flush(session: Session, _context: UOWTransaction) -> None:
    changes = _changes(session)
    for obj in session.new:
        if isinstance(obj, Version):
            changes.versions.add(obj.id)
        elif isinstance(obj, Build) and not obj.superseded:
            changes.taken.add((obj.version_id, obj.abi_id))
        elif isinstance(obj, (Build, Coverage, UpstreamCoverage)):
            changes.versions.add(obj.version_id)
        elif isinstance(obj, Abi):
            changes.abis.add(obj.id)
    for obj in session.dirty:
        if isinstance(obj, Version) and _changed(obj, *_VERSION_KEYS):
            changes.versions.add(obj.id)
        elif isinstance(obj, Project) and _changed(obj, *_PROJECT_KEYS):
            changes.projects.add(obj.id)
        elif (isinstance(obj, Build) and _changed(obj, "superseded", "abi_id", "version_id")) or (
            isinstance(obj, UpstreamWheel) and _changed(obj, "given_up")
        ):
            changes.versions.add(obj.version_id)
        elif isinstance(obj, Abi) and _changed(obj, "active", "python_tag", "abi_tag", "platform_tag"):
            changes.abis.add(obj.id)
    for obj in session.deleted:
        # Versions and projects take their pairs with them (foreign keys, ON DELETE CASCADE).
        if isinstance(obj, (Build, Coverage, UpstreamCoverage, File, UpstreamWheel)):
            changes.versions.add(obj.version_id)


def _before_commit(session: Session) -> None:
    apply(session)


def track(sessions: sessionmaker[Session]) -> None:
    """Keep the queue in step in every session ``sessions`` makes."""
    event.listen(sessions, "after_flush", _after_flush)
    event.listen(sessions, "before_commit", _before_commit)


def apply(session: Session) -> None:
    """Bring the pairs of everything noted as changed up to date (flushing first)."""
    if not session.info.get(_KEY) and not session.new and not session.dirty and not session.deleted:
        return
    session.flush()
    changes = session.info.pop(_KEY, None)
    if not changes:
        return
    for version_id, abi_id in sorted(changes.taken):
        session.execute(
            delete(PendingPair).where(PendingPair.version_id == version_id, PendingPair.abi_id == abi_id)
        )
    for abi_id in sorted(changes.abis):
        refresh_abi(session, abi_id)
    versions = set(changes.versions)
    if changes.projects:
        for chunk in in_batches(sorted(changes.projects)):
            versions.update(session.scalars(select(Version.id).where(Version.project_id.in_(chunk))))
    refresh_versions(session, versions)


def pending_condition() -> ColumnElement[bool]:
    """What makes a (Version, Abi) pair pending, but for Requires-Python (see the module)."""
    return and_(
        Abi.active == true(),
        or_(Project.watched, Version.priority > 0),
        Project.skip_reason.is_(None),
        Version.skip_reason.is_(None),
        Version.sdist_url.is_not(None),
        or_(Version.yanked == false(), Version.priority > 0),
        ~exists().where(Coverage.version_id == Version.id, Coverage.abi_id == Abi.id),
        ~exists().where(UpstreamCoverage.version_id == Version.id, UpstreamCoverage.abi_id == Abi.id),
        ~exists().where(Build.version_id == Version.id, Build.abi_id == Abi.id, Build.superseded == false()),
    )


def refresh_versions(session: Session, version_ids: Iterable[int]) -> None:
    """Compute the pending pairs of these versions again."""
    for chunk in in_batches(sorted(version_ids)):
        session.execute(delete(PendingPair).where(PendingPair.version_id.in_(chunk)))
        _insert_and_exclude(session, Version.id.in_(chunk))


def refresh_abi(session: Session, abi_id: int) -> None:
    """Compute the pending pairs of one ABI again (all of them: a new or (de)activated ABI)."""
    session.execute(delete(PendingPair).where(PendingPair.abi_id == abi_id))
    _insert_and_exclude(session, Abi.id == abi_id)


def refresh_all(session: Session) -> None:
    """Compute every pending pair again (a new database, a migration)."""
    session.execute(delete(PendingPair))
    _insert_and_exclude(session, true())


def _insert_and_exclude(session: Session, scope: ColumnElement[bool]) -> None:
    """Insert the pairs ``scope`` (a condition on Version and Abi) selects that are pending, in
    SQL, then take out those whose Requires-Python excludes their ABI: one statement for each
    distinct (Requires-Python, ABI) that excludes."""
    sort_time = func.coalesce(Version.release_time, literal(NO_TIME, UTCDateTime()))
    candidates = (
        select(Version.id, Abi.id, Version.priority, sort_time)
        .join_from(Version, Project, Version.project_id == Project.id)
        .join_from(Version, Abi, true())
        .where(scope, pending_condition())
    )
    session.execute(
        insert(PendingPair).from_select(["version_id", "abi_id", "priority", "sort_time"], candidates)
    )
    excluded: list[tuple[int, int]] = []
    verdicts: dict[tuple[str, int], bool] = {}
    limited = (
        select(PendingPair.version_id, PendingPair.abi_id, Version.requires_python)
        .join_from(PendingPair, Version, Version.id == PendingPair.version_id)
        .join_from(PendingPair, Abi, Abi.id == PendingPair.abi_id)
        .where(scope, Version.requires_python.is_not(None))
    )
    tags = {
        row.id: AbiTags(row.python_tag, row.abi_tag, row.platform_tag) for row in session.scalars(select(Abi))
    }
    for version_id, abi_id, requires in session.execute(limited.execution_options(yield_per=10_000)):
        verdict = verdicts.get((requires, abi_id))
        if verdict is None:
            verdict = verdicts[requires, abi_id] = runs_on(requires, tags[abi_id])
        if not verdict:
            excluded.append((abi_id, version_id))
    excluded.sort()
    for chunk in in_batches(excluded):
        for abi_id in {abi for abi, _v in chunk}:
            session.execute(
                delete(PendingPair).where(
                    PendingPair.abi_id == abi_id,
                    PendingPair.version_id.in_([v for abi, v in chunk if abi == abi_id]),
                )
            )
