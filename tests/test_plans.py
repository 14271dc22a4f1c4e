"""The controller's hot statements use indexes: EXPLAIN on a farm big enough for the planner to
care (SQLite and PostgreSQL), failing on a full scan of a big table."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Executable, delete, func, select, text, update
from sqlalchemy.orm import Session

from piwheels_ctl.db.engine import Database, upgrade
from piwheels_ctl.db.models import Build, BuildStatus, Count, PendingPair, Project, Version
from piwheels_ctl.queue.claims import claim_query, no_sdist_query, queue_query
from piwheels_ctl.queue.status import ccache_query
from piwheels_ctl.queue.upkeep import refresh_all

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from farm import make_farm  # bench/ is not a package

# Tables that grow with the farm: reading one of them whole is what must not happen.
BIG = ("projects", "versions", "builds", "files", "coverage", "upstream_coverage", "upstream_wheels")

# Partial indexes hold the few rows a statement wants: reading one whole is what it is for.
PARTIAL = ("ix_versions_no_sdist", "ix_versions_skipped", "ix_projects_skipped", "ix_builds_ccache")


@pytest.fixture(scope="module")
def farm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """A farm of 3,000 projects (18,000 versions), some pairs pending, some builds under way."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('plans') / 'piwheels.db'}"
    else:
        base: str = request.getfixturevalue("postgres_server")
        admin = base.replace("postgresql+psycopg://", "postgresql://", 1) + "postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE plans")
        url = base + "plans"
    db = Database(url)
    upgrade(db.engine)
    make_farm(db.engine, 3000)
    with Session(db.engine) as session, session.begin():
        # Rebuilds asked for: their pairs are pending; a few builds under way; a few pages to write.
        session.execute(update(Build).where(Build.version_id % 10 == 1).values(superseded=True))
        session.execute(update(Build).where(Build.version_id % 1000 == 2).values(status=BuildStatus.BUILDING))
        session.execute(update(Project).where(Project.id % 500 == 0).values(dirty=True))
        # Builds that compiled something, with the compiler cache's hits and misses.
        session.execute(update(Build).where(Build.id % 50 == 0).values(ccache_hits=9, ccache_misses=1))
        # The upstream's own wheels for 1 version in 4, covering the third ABI; a few versions
        # without an sdist yet.
        session.execute(
            text(
                "INSERT INTO upstream_wheels (version_id, filename, url, sha256, attempts, given_up) "
                "SELECT id, 'p-' || id || '-cp311-cp311-manylinux_2_17_aarch64.whl', 'https://x/', "
                "sdist_sha256, 0, false FROM versions WHERE id % 4 = 3"
            )
        )
        session.execute(
            text(
                "INSERT INTO upstream_coverage (version_id, abi_id, wheel_id) "
                "SELECT version_id, 3, id FROM upstream_wheels"
            )
        )
        session.execute(update(Version).where(Version.id % 1000 == 5).values(sdist_url=None))
        refresh_all(session)
    with db.engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()
    yield db
    db.dispose()
    if request.param == "postgresql":
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("DROP DATABASE plans WITH (FORCE)")


def _plan(db: Database, statement: Executable) -> list[str]:
    sql = str(statement.compile(db.engine, compile_kwargs={"literal_binds": True}))  # type: ignore[attr-defined]
    with db.engine.connect() as conn:
        if db.engine.dialect.name == "postgresql":
            return [row[0] for row in conn.execute(text(f"EXPLAIN {sql}"))]
        return [row[3] for row in conn.execute(text(f"EXPLAIN QUERY PLAN {sql}"))]


def _full_scans(db: Database, plan: list[str]) -> list[str]:
    if db.engine.dialect.name == "postgresql":
        return [line for line in plan if any(f"Seq Scan on {table} " in f"{line} " for table in BIG)]
    return [
        line
        for line in plan
        if any(line.startswith(f"SCAN {table}") for table in BIG)
        and not any(f"USING INDEX {index}" in line for index in PARTIAL)
    ]


def _statements() -> dict[str, Executable]:
    building = (Build.id.in_([1, 2, 3]), Build.status == BuildStatus.BUILDING)
    return {
        "claim": claim_query().params(abi=2),
        "queue": queue_query().limit(101),
        "queue count": select(func.count()).select_from(PendingPair),
        "hand back (versions)": select(Build.version_id).where(*building),
        "hand back": delete(Build).where(*building),
        "stale leases": select(Build).where(Build.status == BuildStatus.BUILDING),
        "failures by reason": select(Build.failure_reason, func.count())
        .where(Build.status == BuildStatus.FAILED)
        .group_by(Build.failure_reason),
        "waiting for an sdist": no_sdist_query().limit(100),
        "skipped projects": select(Project.name, Project.skip_reason).where(Project.skip_reason.is_not(None)),
        "skipped versions": select(Version.project_id, Version.version, Version.skip_reason).where(
            Version.skip_reason.is_not(None)
        ),
        "counts": select(Count.name, Count.value),
        "builds under way": select(func.count()).where(Build.status == BuildStatus.BUILDING),
        "compiler cache figure": ccache_query(),
        "dirty projects": select(Project.id, Project.name, Project.display_name).where(Project.dirty),
        "builds of a version": select(Build.id).where(Build.version_id == 7, Build.abi_id == 2),
        "files of a build": select(text("id")).select_from(text("files")).where(text("build_id = 5")),
    }


@pytest.mark.parametrize(
    "farm", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
@pytest.mark.parametrize("name", list(_statements()))
def test_hot_statement_reads_no_big_table_whole(farm: Database, name: str) -> None:
    plan = _plan(farm, _statements()[name])
    scans = _full_scans(farm, plan)
    assert not scans, f"{name}: a full scan of a big table: {scans}; the plan:\n" + "\n".join(plan)


@pytest.mark.parametrize(
    "farm", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
@pytest.mark.parametrize("name", ["claim", "queue"])
def test_the_queue_is_read_in_its_index_order(farm: Database, name: str) -> None:
    """A claim or a listing reads the first pairs of an index, never sorts the whole queue."""
    plan = _plan(farm, _statements()[name])
    if farm.engine.dialect.name == "postgresql":
        sorted_all = [line for line in plan if line.strip().startswith("->  Sort") or line.startswith("Sort")]
        used = [line for line in plan if "ix_pending_pairs" in line]
    else:
        sorted_all = [line for line in plan if line == "USE TEMP B-TREE FOR ORDER BY"]
        used = [line for line in plan if "ix_pending_pairs" in line]
    assert used and not sorted_all, f"{name}: the queue is not read in index order:\n" + "\n".join(plan)
