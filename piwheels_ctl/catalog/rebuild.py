"""Put built or failed versions back in the queue, first: one project's, or every failure of a reason."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import delete, func, select, true, update
from sqlalchemy.orm import Session

from ..db.batches import in_batches
from ..db.models import Abi, Build, BuildStatus, Coverage, Version
from ..errors import InputError
from ..failures.failed import check_reason
from ..queue import upkeep
from .projects import find, skip_reason


@dataclass
class Rebuilt:
    """What ``rebuild`` queued, and the versions it left alone because they are skipped."""

    queued: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (version, reason)


def rebuild(
    session: Session,
    name: str,
    version: str | None,
    *,
    all_versions: bool = False,
    abi: str | None = None,
) -> Rebuilt:
    """Put versions back in the queue, first; their finished builds stay as history, their wheels
    served. Without ``version``: the versions built or failed before (``all_versions``: every one).
    With ``abi``: only for that ABI tag."""
    project, versions = find(session, name, version)
    abi_ids: list[int] | None = None
    if abi is not None:
        abi_ids = list(session.scalars(select(Abi.id).where(Abi.tag == abi)))
        if not abi_ids:
            raise InputError(f"--abi {abi}: not an ABI of this farm (see 'piwheels-ctl status')")
    finished = Build.status != BuildStatus.BUILDING
    for_abi = Build.abi_id.in_(abi_ids) if abi_ids is not None else true()
    if version is None and not all_versions:
        tried: set[int] = set()
        for chunk in in_batches([v.id for v in versions]):
            tried.update(
                session.scalars(
                    select(Build.version_id).where(
                        Build.version_id.in_(chunk), finished, for_abi, Build.superseded.is_(False)
                    )
                )
            )
        versions = [v for v in versions if v.id in tried]
    result = Rebuilt()
    ids = []
    for row in versions:
        reason = skip_reason(project, row)
        if row.sdist_url is None:
            continue
        if reason:
            result.skipped.append((row.version, reason))
            continue
        ids.append(row.id)
        result.queued.append(row.version)
        row.priority = max(row.priority, 1)
    cov_abi = Coverage.abi_id.in_(abi_ids) if abi_ids is not None else true()
    upkeep.touch(session, versions=ids)
    for chunk in in_batches(ids):
        session.execute(delete(Coverage).where(Coverage.version_id.in_(chunk), cov_abi))
        session.execute(
            update(Build).where(Build.version_id.in_(chunk), finished, for_abi).values(superseded=True)
        )
    project.dirty = True
    return result


def rebuild_failed(session: Session, reason: str) -> int:
    """Queue again, first, every (version, ABI) whose counting build failed with ``reason``;
    the failed builds stay as history (superseded). The number of builds queued again."""
    check_reason(reason, "--failed-with")
    counting = (
        Build.status == BuildStatus.FAILED,
        Build.superseded.is_(False),
        Build.failure_reason == reason,
    )
    count = session.scalar(select(func.count()).select_from(Build).where(*counting)) or 0
    versions = select(Build.version_id).where(*counting)
    upkeep.touch(session, versions=session.scalars(versions))
    session.execute(update(Version).where(Version.id.in_(versions), Version.priority < 1).values(priority=1))
    session.execute(update(Build).where(*counting).values(superseded=True))
    return int(count)
