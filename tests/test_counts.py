"""The counts status shows, kept by triggers, equal what counting the rows gives, whatever
changed them: ORM flushes, bulk statements, deletes cascading from a project."""

from __future__ import annotations

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from piwheels_ctl.db import counts
from piwheels_ctl.db.engine import Database
from piwheels_ctl.db.models import Abi, Build, BuildStatus, Count, File, Project, Version


def _counted(session: Session) -> dict[str, int]:
    """The same counts, from the rows themselves."""
    found = {
        "projects": session.scalar(select(func.count()).select_from(Project)),
        "watched": session.scalar(select(func.count()).where(Project.watched)),
        "versions": session.scalar(select(func.count()).select_from(Version)),
        "files": session.scalar(select(func.count()).select_from(File)),
        "bytes": session.scalar(select(func.coalesce(func.sum(File.size), 0))),
        "mirrored": session.scalar(select(func.count()).where(File.mirrored)),
        "pages": session.scalar(select(func.count(func.distinct(Version.project_id)))),
    }
    for status, number in session.execute(
        select(Build.status, func.count()).where(Build.status != BuildStatus.BUILDING).group_by(Build.status)
    ):
        found[f"builds:{status.value}"] = number
    for reason, number in session.execute(
        select(Build.failure_reason, func.count())
        .where(Build.status == BuildStatus.FAILED)
        .group_by(Build.failure_reason)
    ):
        found[f"failed:{reason or ''}"] = number
    current = (Build.status != BuildStatus.BUILDING, Build.superseded.is_(False))
    for abi_id, status, number in session.execute(
        select(Build.abi_id, Build.status, func.count()).where(*current).group_by(Build.abi_id, Build.status)
    ):
        found[f"abi:{abi_id}:{status.value}"] = number
    for reason, number in session.execute(
        select(Build.failure_reason, func.count())
        .where(Build.status == BuildStatus.FAILED, Build.superseded.is_(False))
        .group_by(Build.failure_reason)
    ):
        found[f"reason:{reason or ''}"] = number
    return {name: int(value) for name, value in found.items() if value}


def _file(version: Version, name: str, size: int, build: Build | None = None, mirrored: bool = False) -> File:
    return File(
        filename=name, version=version, build=build, size=size, sha256="0" * 64, python_tag="py3",
        abi_tag="none", platform_tag="any", metadata_sha256="1" * 64,
        core_metadata="Metadata-Version: 2.1\n", mirrored=mirrored,
    )  # fmt: skip


def test_counts_follow_every_change(db: Database) -> None:
    with db.session() as session:
        assert counts.read(session) == {}
        abi = Abi(
            tag="cp311-cp311-linux_x86_64", python_tag="cp311", abi_tag="cp311", platform_tag="linux_x86_64"
        )
        session.add(abi)
        projects = [Project(name=f"p{i}", display_name=f"P{i}", watched=i % 2 == 0) for i in range(4)]
        session.add_all(projects)
        for project in projects:
            project.versions = [Version(version=f"1.{j}") for j in range(3)]
        session.flush()
        version = projects[0].versions[0]
        builds = [
            Build(version=version, abi=abi, status=BuildStatus.BUILDING),
            Build(version=version, abi=abi, status=BuildStatus.FAILED, failure_reason="missing-header"),
            Build(version=projects[1].versions[0], abi=abi, status=BuildStatus.SUCCESS),
        ]
        session.add_all(builds)
        session.flush()
        session.add_all(
            [
                _file(version, "a-1-py3-none-any.whl", 10, builds[2]),
                _file(version, "b-1-py3-none-any.whl", 5, mirrored=True),
            ]
        )
        session.flush()
        assert counts.read(session) == _counted(session)
        # A build under way (a claim) wrote no counter: concurrent claims wait on none.
        assert "builds:building" not in session.scalars(select(Count.name)).all()
        # The ORM changes rows; a recorded build leaves "building".
        builds[0].status = BuildStatus.FAILED
        builds[0].failure_reason = "cython3"
        projects[1].watched = True
        session.flush()
        assert counts.read(session) == _counted(session)
        # Bulk statements: a rebuild supersedes, a reason changes, sizes change.
        session.execute(update(Build).where(Build.failure_reason == "cython3").values(failure_reason=None))
        session.execute(update(File).values(size=File.size * 3, mirrored=False))
        session.execute(delete(Build).where(Build.status == BuildStatus.SUCCESS))
        assert counts.read(session) == _counted(session)
        before = counts.read(session)
        session.execute(update(Build).where(Build.failure_reason.is_(None)).values(superseded=True))
        after = counts.read(session)
        assert after == _counted(session)
        # A superseded build leaves the current builds' counts, and only those.
        assert (before.get("reason:"), after.get("reason:")) == (1, None), (before, after)
        assert after[f"abi:{abi.id}:failed"] == before[f"abi:{abi.id}:failed"] - 1, (before, after)
        assert after["failed:"] == before["failed:"], (before, after)
        # A project's versions but one go, then the last: it has a page until then.
        session.execute(delete(Version).where(Version.project_id == projects[3].id, Version.version != "1.0"))
        assert counts.read(session) == _counted(session)
        session.execute(delete(Version).where(Version.project_id == projects[3].id))
        assert counts.read(session) == _counted(session)
    with db.session() as session:
        # A project removed: its versions and their builds and files go with it (ON DELETE CASCADE).
        session.execute(delete(Project).where(Project.name == "p0"))
        assert counts.read(session) == _counted(session)
        assert counts.read(session)["projects"] == 3
