"""The build queue on SQLite and PostgreSQL: what is pending, in which order, and claiming."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from piwheels_ctl.builds.record import add_coverage
from piwheels_ctl.catalog.rebuild import rebuild
from piwheels_ctl.db.engine import Database
from piwheels_ctl.db.models import Abi, Build, BuildStatus, File, PendingPair, Project, Version
from piwheels_ctl.queue import upkeep
from piwheels_ctl.queue.claims import Waiting, claim, count, pending, reclaim, waiting

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def _abi(session: Session, python: str, abi: str) -> Abi:
    row = Abi(tag=f"{python}-{abi}-linux_x86_64", python_tag=python, abi_tag=abi, platform_tag="linux_x86_64")
    session.add(row)
    return row


def _setup(session: Session) -> tuple[Project, dict[str, Version], dict[str, Abi]]:
    abis = {"cp311": _abi(session, "cp311", "cp311"), "pp39": _abi(session, "pp39", "pypy39_pp73")}
    project = Project(name="demo", display_name="Demo", watched=True)
    versions = {}
    for days, v in enumerate(["1.0", "2.0", "3.0"]):
        versions[v] = Version(
            version=v,
            release_time=T0 + timedelta(days=days),
            sdist_url=f"http://x/demo-{v}.tar.gz",
            sdist_filename=f"demo-{v}.tar.gz",
        )
        project.versions.append(versions[v])
    session.add(project)
    session.flush()
    return project, versions, abis


def _pairs(
    session: Session, abi_ids: list[int] | None = None, claimable: bool = False
) -> list[tuple[str, str]]:
    jobs = pending(session, abi_ids=abi_ids, claimable=claimable)
    return [(j.version, j.abi.split("-")[0]) for j in jobs]


def _file(session: Session, version: Version, filename: str) -> None:
    python, abi, platform = filename[:-4].split("-")[-3:]
    file = File(
        filename=filename,
        version_id=version.id,
        size=1,
        sha256="0" * 64,
        python_tag=python,
        abi_tag=abi,
        platform_tag=platform,
        metadata_sha256="0" * 64,
        core_metadata="Metadata-Version: 2.1\n",
    )
    session.add(file)
    session.flush()
    add_coverage(session, file, session.scalars(select(Abi)))


def test_newest_first_and_requested_before_all(db: Database) -> None:
    with db.session() as session:
        _project, versions, _abis = _setup(session)
        assert _pairs(session) == [
            ("3.0", "cp311"),
            ("3.0", "pp39"),
            ("2.0", "cp311"),
            ("2.0", "pp39"),
            ("1.0", "cp311"),
            ("1.0", "pp39"),
        ]
        versions["1.0"].priority = 1
        session.flush()
        assert _pairs(session)[:2] == [("1.0", "cp311"), ("1.0", "pp39")]


def test_coverage_rules(db: Database) -> None:
    with db.session() as session:
        _project, versions, abis = _setup(session)
        _file(session, versions["3.0"], "demo-3.0-py3-none-any.whl")
        _file(session, versions["2.0"], "demo-2.0-cp311-cp311-linux_x86_64.whl")
        _file(session, versions["1.0"], "demo-1.0-cp38-abi3-linux_x86_64.whl")
        # The pure wheel covers both; the compiled one only its ABI; abi3 every later CPython.
        assert _pairs(session) == [("2.0", "pp39"), ("1.0", "pp39")]
        assert _pairs(session, abi_ids=[abis["cp311"].id]) == []


def test_a_build_takes_the_pair_out_and_claimable_waits_for_running_versions(db: Database) -> None:
    with db.session() as session:
        _setup(session)
        first = next(pending(session, claimable=True))
        assert (first.version, first.abi.split("-")[0]) == ("3.0", "cp311")
        claim(session, first, builder_id=None, lease=timedelta(hours=1))
        # Not offered again, and its other ABI waits: the wheel may cover it.
        assert ("3.0", "cp311") not in _pairs(session)
        assert ("3.0", "pp39") in _pairs(session)
        assert ("3.0", "pp39") not in _pairs(session, claimable=True)


def test_skipped_yanked_binary_only_and_requires_python(db: Database) -> None:
    with db.session() as session:
        project, versions, _abis = _setup(session)
        versions["3.0"].yanked = True
        versions["2.0"].requires_python = ">=3.10"
        versions["1.0"].sdist_url = None
        session.flush()
        assert _pairs(session) == [("2.0", "cp311")]
        versions["3.0"].priority = 1  # asked for by name: built although yanked
        session.flush()
        assert ("3.0", "cp311") in _pairs(session)
        project.skip_reason = "needs CUDA"
        session.flush()
        assert _pairs(session) == []


def test_reclaim_hands_back_expired_and_orphaned_leases(db: Database) -> None:
    with db.session() as session:
        _setup(session)
        jobs = list(pending(session, limit=3))
        expired = claim(session, jobs[0], builder_id=None, lease=timedelta(hours=1))
        expired.lease_expires = T0
        orphan = claim(session, jobs[1], builder_id=None, lease=timedelta(hours=1))
        host = (orphan.lease_owner or "").rpartition(":")[0]
        orphan.lease_owner = f"{host}:999999999"  # no such process on this host
        live = claim(session, jobs[2], builder_id=None, lease=timedelta(hours=1))
        session.flush()
        assert reclaim(session) == 2
        assert session.scalars(select(Build.id)).all() == [live.id]
        assert live.status is BuildStatus.BUILDING


def test_rebuild_queues_again_and_keeps_the_old_build(db: Database) -> None:
    with db.session() as session:
        _project, versions, _abis = _setup(session)
        for job in list(pending(session)):
            build = claim(session, job, builder_id=None, lease=timedelta(hours=1))
            build.status = BuildStatus.SUCCESS
        session.flush()
        assert _pairs(session) == []
        assert rebuild(session, "demo", "2.0").queued == ["2.0"]
        session.flush()
        assert _pairs(session) == [("2.0", "cp311"), ("2.0", "pp39")]
        assert versions["2.0"].priority == 1
        old = session.scalars(select(Build).where(Build.version_id == versions["2.0"].id)).all()
        assert len(old) == 2 and all(b.superseded for b in old)


def test_a_version_without_sdist_waits_until_one_appears(db: Database) -> None:
    with db.session() as session:
        _project, versions, _abis = _setup(session)
        versions["3.0"].sdist_url = None
        session.flush()
        assert ("3.0", "cp311") not in _pairs(session)
        assert waiting(session) == [Waiting("demo", "3.0")]
        # A wheel that covers every ABI: nothing is missing, so it does not wait either.
        _file(session, versions["3.0"], "demo-3.0-py3-none-any.whl")
        assert waiting(session) == []
        session.rollback()
    with db.session() as session:
        _project, versions, _abis = _setup(session)
        versions["3.0"].sdist_url = None
        session.flush()
        assert waiting(session) == [Waiting("demo", "3.0")]
        versions["3.0"].sdist_url = "http://x/demo-3.0.tar.gz"
        session.flush()
        assert waiting(session) == []
        assert _pairs(session)[:2] == [("3.0", "cp311"), ("3.0", "pp39")], _pairs(session)


def test_the_kept_queue_is_what_computing_it_afresh_gives(db: Database) -> None:
    """After changes of every kind, the pairs kept row by row are those a recount finds; a pair
    that Requires-Python excludes never enters, so it is not counted as remaining."""
    with db.session() as session:
        project, versions, abis = _setup(session)
        versions["2.0"].requires_python = ">=3.10"  # pp39 cannot install it
        session.flush()
        _file(session, versions["1.0"], "demo-1.0-py3-none-any.whl")
        build = claim(session, next(pending(session)), builder_id=None, lease=timedelta(hours=1))
        abis["pp39"].active = False
        session.flush()
        abis["pp39"].active = True
        project.watched = False
        versions["3.0"].priority = 1
        session.execute(delete(Build).where(Build.id == build.id))  # handed back, in bulk
        upkeep.touch(session, versions=[build.version_id])
        assert count(session) == 2  # brings the kept rows up to date first
        kept = sorted(session.execute(select(PendingPair.version_id, PendingPair.abi_id)).all())
        assert len(kept) == 2
        upkeep.refresh_all(session)
        assert sorted(session.execute(select(PendingPair.version_id, PendingPair.abi_id)).all()) == kept
        assert _pairs(session) == [("3.0", "cp311"), ("3.0", "pp39")]
