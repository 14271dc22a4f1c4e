"""Which (version, ABI) pairs a wheel the upstream already publishes covers, so they are not built.

A sync records each release's wheels for Linux or any platform (``UpstreamWheel``) and, for
every active ABI such a wheel installs on (``abi.upstream_covers``, its Requires-Python
included), an ``UpstreamCoverage`` row that keeps the pair out of the queue.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from sqlalchemy import delete, insert, select, true
from sqlalchemy.orm import Session

from ..abi import AbiTags, Glibc, runs_on, upstream_covers
from ..db.batches import in_batches
from ..db.models import Abi, Project, UpstreamCoverage, UpstreamWheel, Version
from . import upkeep

if TYPE_CHECKING:
    from ..upstream.page import WheelLink

# Upstream wheels read, and coverage rows written, per batch when an ABI is added.
BATCH = 10_000


def _tags(abi: Abi) -> AbiTags:
    return AbiTags(abi.python_tag, abi.abi_tag, abi.platform_tag)


def covered_abis(filename: str, requires_python: str | None, abis: Iterable[Abi], glibc: Glibc) -> list[Abi]:
    """The ABIs of ``abis`` that the upstream wheel ``filename`` installs on."""
    return [
        abi
        for abi in abis
        if upstream_covers(filename, _tags(abi), glibc) and runs_on(requires_python, _tags(abi))
    ]


def record_wheels(
    session: Session, project: Project, wheels: dict[str, Sequence[WheelLink]], glibc: Glibc
) -> None:
    """Make the upstream wheels of ``project``'s versions (by version string) exactly ``wheels``
    and cover the active ABIs they install on; a wheel given up on covers nothing any more."""
    session.flush()  # the new versions get their ids
    ids = {row.version: row.id for row in project.versions}
    existing = {
        (w.version_id, w.filename): w
        for w in session.scalars(
            select(UpstreamWheel).join(UpstreamWheel.version).where(Version.project_id == project.id)
        )
    }
    listed: set[tuple[int, str]] = set()
    for version, links in wheels.items():
        version_id = ids.get(version)
        if version_id is None:  # a release left out (a value too long for the database)
            continue
        for link in links:
            key = (version_id, link.filename)
            listed.add(key)
            row = existing.get(key)
            if row is None:
                row = UpstreamWheel(version_id=version_id, filename=link.filename, attempts=0, given_up=False)
                session.add(row)
                existing[key] = row
            row.url, row.sha256, row.size = link.url, link.sha256, link.size
            row.requires_python = link.requires_python
    gone = [row.id for key, row in existing.items() if key not in listed and row.id is not None]
    if gone:
        upkeep.touch(session, versions={key[0] for key in existing if key not in listed})
        for chunk in in_batches(gone):
            session.execute(delete(UpstreamWheel).where(UpstreamWheel.id.in_(chunk)))
    session.flush()
    live = [row for key, row in existing.items() if key in listed and not row.given_up]
    if live:
        _cover(session, live, list(session.scalars(select(Abi).where(Abi.active == true()))), glibc)


def cover_abi(session: Session, abi: Abi, glibc: Glibc) -> None:
    """Cover a new ABI (none of its pairs covered yet) with every upstream wheel, not given up
    on, that installs on it: the wheels read as plain rows, the rows written in batches."""
    verdicts: dict[tuple[str, str | None], bool] = {}
    last = 0
    while True:
        rows = session.execute(
            select(
                UpstreamWheel.id,
                UpstreamWheel.version_id,
                UpstreamWheel.filename,
                UpstreamWheel.requires_python,
            )
            .where(UpstreamWheel.given_up.is_(False), UpstreamWheel.id > last)
            .order_by(UpstreamWheel.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        batch = []
        for wheel_id, version_id, filename, requires in rows:
            # The tags and Requires-Python decide alone: wheels that share them share the answer.
            key = ("-".join(filename.split("-")[-3:]), requires)
            verdict = verdicts.get(key)
            if verdict is None:
                verdict = verdicts[key] = bool(covered_abis(filename, requires, [abi], glibc))
            if verdict:
                batch.append({"version_id": version_id, "abi_id": abi.id, "wheel_id": wheel_id})
        if batch:
            session.execute(insert(UpstreamCoverage), batch)
        last = rows[-1][0]


def _cover(session: Session, rows: list[UpstreamWheel], abis: list[Abi], glibc: Glibc) -> None:
    if not abis:
        return
    have: set[tuple[int, int]] = set()
    for chunk in in_batches([row.id for row in rows]):
        have.update(
            session.execute(
                select(UpstreamCoverage.wheel_id, UpstreamCoverage.abi_id).where(
                    UpstreamCoverage.wheel_id.in_(chunk)
                )
            ).tuples()
        )
    for row in rows:
        for abi in covered_abis(row.filename, row.requires_python, abis, glibc):
            if (row.id, abi.id) not in have:
                session.add(UpstreamCoverage(version_id=row.version_id, abi_id=abi.id, wheel_id=row.id))
    session.flush()


def give_up(session: Session, wheel_id: int, error: str) -> None:
    """Stop counting on the upstream wheel: its ABIs are built after all."""
    row = session.get(UpstreamWheel, wheel_id)
    if row is None:
        return
    row.given_up = True
    row.error = error
    upkeep.touch(session, versions=[row.version_id])
    session.execute(delete(UpstreamCoverage).where(UpstreamCoverage.wheel_id == wheel_id))
    row.version.project.dirty = True
