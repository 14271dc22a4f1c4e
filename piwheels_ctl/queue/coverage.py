"""Which (version, ABI) pairs our own wheels cover, so that the queue skips them.

A wheel covers a pair where its tags install on the ABI and it is listed in a release the ABI
is built on (``releases.listed_in``): a compiled wheel of another release covers nothing there
until a builder of that release has loaded it; until then a check of it is queued instead.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import ColumnElement, and_, delete, exists, insert, literal, not_, select
from sqlalchemy.orm import Session

from ..abi import AbiTags, wheel_covers
from ..db.batches import in_batches
from ..db.models import Abi, Coverage, File, ReleaseCheck
from . import releases, upkeep


def abi_tags(abi: Abi) -> AbiTags:
    return AbiTags(abi.python_tag, abi.abi_tag, abi.platform_tag)


def add_coverage(session: Session, file: File, abis: Iterable[Abi]) -> None:
    """Record every ABI the wheel ``file`` installs on and is listed for, so the queue skips
    them; for an ABI of another release it is not listed in, queue a check there."""
    where = releases.abi_releases(session)
    passed = releases.passed_checks(session, [file.id]).get(file.id, set())
    for abi in abis:
        if not wheel_covers(file.filename, abi_tags(abi)):
            continue
        on = where.get(abi.id, set())
        if not on or any(
            releases.listed_in(r, platform_tag=file.platform_tag, built_on=file.release, passed=passed)
            for r in on
        ):
            session.merge(Coverage(version_id=file.version_id, abi_id=abi.id, file_id=file.id))
        else:
            for release in on:
                queue_check(session, file.id, release)


def queue_check(session: Session, file_id: int, release: str) -> None:
    """A check of ``file_id`` by a builder of ``release``, unless one is recorded already."""
    if session.get(ReleaseCheck, (file_id, release)) is None:
        session.add(ReleaseCheck(file_id=file_id, release=release, status=releases.PENDING))
        session.flush()


def _unlisted(rels: set[str]) -> ColumnElement[bool]:
    """Files that are listed in none of ``rels`` (a condition on File)."""
    return and_(
        File.platform_tag != "any",
        File.release.is_not(None),
        File.release.not_in(sorted(rels)),
        not_(
            exists().where(
                ReleaseCheck.file_id == File.id,
                ReleaseCheck.status == releases.PASSED,
                ReleaseCheck.release.in_(sorted(rels)),
            )
        ),
    )


def cover_new_abi(session: Session, abi: Abi) -> None:
    """Record every wheel of ours that installs on ``abi``, an ABI just added: one INSERT …
    SELECT for each distinct set of wheel tags that covers it, none walking the files."""
    tags = abi_tags(abi)
    rels = releases.abi_releases(session).get(abi.id, set())
    kinds = session.execute(select(File.python_tag, File.abi_tag, File.platform_tag).distinct()).all()
    for python_tag, abi_tag, platform_tag in kinds:
        # The tags decide alone: any name and version stand for the file's.
        if not wheel_covers(f"x-0-{python_tag}-{abi_tag}-{platform_tag}.whl", tags):
            continue
        files = select(File.version_id, literal(abi.id), File.id).where(
            File.python_tag == python_tag, File.abi_tag == abi_tag, File.platform_tag == platform_tag
        )
        if rels:
            files = files.where(not_(_unlisted(rels)))
        session.execute(insert(Coverage).from_select(["version_id", "abi_id", "file_id"], files))


def uncover_other_releases(session: Session) -> None:
    """Take back the coverage of compiled files where the ABI's releases no longer list them
    (a builder of another release took the ABI, or said its release), and queue their checks."""
    for abi_id, rels in sorted(releases.abi_releases(session).items()):
        stale = (
            select(Coverage.file_id, Coverage.version_id)
            .join(File, File.id == Coverage.file_id)
            .where(Coverage.abi_id == abi_id, _unlisted(rels))
        )
        rows = session.execute(stale).all()
        if not rows:
            continue
        for file_id, _version_id in rows:
            for release in rels:
                queue_check(session, file_id, release)
        for batch in in_batches(sorted({f for f, _v in rows})):
            session.execute(delete(Coverage).where(Coverage.abi_id == abi_id, Coverage.file_id.in_(batch)))
        upkeep.touch(session, versions={v for _f, v in rows})


def cover_checked(session: Session, file: File) -> None:
    """A check passed: the file covers the ABIs of that release it installs on."""
    add_coverage(session, file, session.scalars(select(Abi)))
