"""A synthetic farm of any size, written in bulk SQL (no ORM): the shape of issue 10's farm.

Per project 6 versions; of the versions

* 87 % pure Python: one successful build (the first ABI), one ``py3-none-any`` wheel that
  covers every ABI;
* 10 % compiled: a build for each of the 4 ABIs, failed but for 1 version in 16, whose builds
  succeed with one wheel each;
* 3 % compiled with ``Requires-Python >=3.10``: built for the 3 ABIs it runs on, so that its
  pair with ``cp39`` is excluded by Requires-Python (never pending);

and 1 project in 20 is not watched. 500,000 projects give 3.0M versions, 4.08M builds, 2.7M
wheels and 90,000 pairs that Requires-Python excludes: a caught-up farm, nothing pending,
and one builder (not reachable: 192.0.2.1) with an interpreter for each of the 4 ABIs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import Engine, insert, text, update
from sqlalchemy.orm import Session

from piwheels_ctl.db import counts
from piwheels_ctl.db.models import File, Project, Version
from piwheels_ctl.queue.upkeep import refresh_all

VERSIONS_PER_PROJECT = 6
ABIS = (
    ("cp39", "cp39", "linux_armv7l"),
    ("cp311", "cp311", "linux_armv7l"),
    ("cp311", "cp311", "linux_aarch64"),
    ("cp313", "cp313", "linux_aarch64"),
)
START = 1_500_000_000  # the first release's Unix time; one release every 60 s after it
METADATA = "Metadata-Version: 2.1"  # every wheel's core metadata


# Project i's (canonical) name and display name: SPREAD[i % 100], then these, then i.
NAME, DISPLAY = "project-", "Project-"
# The first characters of the names, a hundred projects' worth, spread over the lists of
# projects by first character roughly as PyPI's are: the largest list ("p", with the py-
# names) about an eighth of the projects, "s" a tenth, the digits and the rare letters 1%.
SHARES = {"p": 13, "s": 10, "c": 7, "d": 6, "m": 5, "a": 5, "t": 5, "f": 4, "b": 4, "g": 4, "l": 4, "r": 4,
          "h": 3, "e": 3, "i": 3, "o": 3, "n": 3, "w": 2, "k": 2, "v": 2, "j": 2, "u": 1, "q": 1, "x": 1,
          "y": 1, "z": 1, "0": 1}  # fmt: skip
SPREAD = "".join(first * share for first, share in SHARES.items())
assert len(SPREAD) == 100, len(SPREAD)


def project_name(i: int) -> str:
    return f"{SPREAD[i % 100]}-{NAME}{i}"


def display_name(i: int) -> str:
    return f"{SPREAD[i % 100].upper()}-{DISPLAY}{i}"


@dataclass(frozen=True)
class FarmSize:
    projects: int
    versions: int
    builds: int
    files: int
    pending: int


def _series(engine: Engine, count: str) -> tuple[str, str]:
    """A WITH prefix and a FROM clause that give the numbers 1..``count`` (a bind name) as ``n``."""
    if engine.dialect.name == "postgresql":
        return "", f"generate_series(1, :{count}) AS seq(n)"
    return f"WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < :{count}) ", "seq"


def _time(engine: Engine, seconds: str) -> str:
    """A UTC timestamp ``seconds`` (an SQL expression) after the Unix epoch, as the column holds it."""
    if engine.dialect.name == "postgresql":
        return f"to_timestamp({seconds})"
    return f"strftime('%Y-%m-%d %H:%M:%f000', {seconds}, 'unixepoch')"


def make_farm(engine: Engine, projects: int) -> FarmSize:
    """Fill an empty database (at the schema head) with a caught-up farm of ``projects`` projects."""
    versions = projects * VERSIONS_PER_PROJECT
    with_seq, seq = _series(engine, "count")
    released = _time(engine, f"{START} + n * 60")
    kind = "(v.id % 100)"
    first = f"substr('{SPREAD}', n % 100 + 1, 1)"  # project n's first character: SPREAD[n % 100]
    statements = [
        (
            "INSERT INTO abis (id, tag, python_tag, abi_tag, platform_tag, active) VALUES "
            + ", ".join(
                f"({i}, '{py}-{abi}-{plat}', '{py}', '{abi}', '{plat}', true)"
                for i, (py, abi, plat) in enumerate(ABIS, 1)
            ),
            {},
        ),
        # One builder with an interpreter for each ABI (so all four stay active).
        (
            'INSERT INTO builders (id, name, host, port, "user", slots, healthy, info) '
            "VALUES (1, 'pi-1', '192.0.2.1', 22, 'piwheels', 4, true, '{}')",
            {},
        ),
        (
            "INSERT INTO builder_pythons (builder_id, abi_id, path) VALUES "
            + ", ".join(f"(1, {i}, '/usr/bin/python3')" for i in range(1, len(ABIS) + 1)),
            {},
        ),
        (
            # As a sync left them (serial 1, ETag "1" of ``upstream.Upstream``); the root index
            # lists those with a wheel (below).
            f"{with_seq}INSERT INTO projects (id, name, display_name, watched, dirty, dirty_generation, "
            f"serial, etag) SELECT n, {first} || '-{NAME}' || n, upper({first}) || '-{DISPLAY}' || n, "
            f"n % 20 <> 0, false, 0, 1, '\"1\"' FROM {seq}",
            {"count": projects},
        ),
        (
            f"{with_seq}INSERT INTO versions (id, project_id, version, release_time, yanked, sdist_filename, "
            "sdist_url, sdist_sha256, requires_python, priority) "
            f"SELECT n, (n - 1) / {VERSIONS_PER_PROJECT} + 1, '1.' || ((n - 1) % {VERSIONS_PER_PROJECT}), "
            f"{released}, false, 'p-' || n || '.tar.gz', 'https://files.example/p-' || n || '.tar.gz', "
            f"'{'0' * 64}', CASE WHEN n % 100 >= 97 THEN '>=3.10' ELSE NULL END, 0 FROM {seq}",
            {"count": versions},
        ),
        # Pure Python: built once, on the first ABI.
        (
            "INSERT INTO builds (version_id, abi_id, status, started_at, duration, superseded) "
            f"SELECT v.id, 1, 'success', v.release_time, 10.0, false FROM versions v WHERE {kind} < 87",
            {},
        ),
        # Compiled: built for every ABI it runs on; 1 version in 16 builds.
        (
            "INSERT INTO builds (version_id, abi_id, status, started_at, duration, failure_reason, "
            "superseded) SELECT v.id, a.id, CASE WHEN (v.id / 100) % 16 = 0 THEN 'success' ELSE 'failed' "
            "END, v.release_time, 60.0, "
            "CASE WHEN (v.id / 100) % 16 = 0 THEN NULL ELSE 'missing-header' END, false "
            f"FROM versions v JOIN abis a ON {kind} >= 87 AND (a.id > 1 OR {kind} < 97)",
            {},
        ),
        (
            "INSERT INTO files (filename, version_id, build_id, size, sha256, python_tag, abi_tag, "
            "platform_tag, requires_python, metadata_sha256, core_metadata, uploaded_at, mirrored) "
            "SELECT 'project_' || v.project_id || '-' || v.version || '-' || "
            "CASE WHEN b.abi_id = 1 AND " + kind + " < 87 THEN 'py3-none-any' "
            "ELSE a.python_tag || '-' || a.abi_tag || '-' || a.platform_tag END || '.whl', "
            "v.id, b.id, 100000, '" + "1" * 64 + "', "
            f"CASE WHEN {kind} < 87 THEN 'py3' ELSE a.python_tag END, "
            f"CASE WHEN {kind} < 87 THEN 'none' ELSE a.abi_tag END, "
            f"CASE WHEN {kind} < 87 THEN 'any' ELSE a.platform_tag END, "
            f"v.requires_python, '{hashlib.sha256(METADATA.encode()).hexdigest()}', '{METADATA}', "
            "b.started_at, false "
            "FROM builds b JOIN versions v ON v.id = b.version_id JOIN abis a ON a.id = b.abi_id "
            "WHERE b.status = 'success'",
            {},
        ),
        (
            "INSERT INTO coverage (version_id, abi_id, file_id) SELECT f.version_id, a.id, f.id "
            "FROM files f JOIN abis a ON f.abi_tag = 'none' OR a.abi_tag = f.abi_tag "
            "AND a.platform_tag = f.platform_tag",
            {},
        ),
        (
            "UPDATE projects SET listed_name = display_name WHERE EXISTS (SELECT 1 FROM versions v "
            "JOIN files f ON f.version_id = v.id WHERE v.project_id = projects.id)",
            {},
        ),
    ]
    with Session(engine) as session, session.begin():
        # Counted once at the end, not row by row by the triggers.
        counts.drop_triggers(session.connection())
        for sql, params in statements:
            session.execute(text(sql), params)
        counts.create_triggers(session.connection())
        counts.fill(session.connection())
        if engine.dialect.name == "postgresql":
            for table in ("abis", "builders", "projects", "versions", "builds", "files"):
                session.execute(
                    text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}")
                )
        refresh_all(session)
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()

        def count(table: str) -> int:
            return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())

        return FarmSize(projects, count("versions"), count("builds"), count("files"), count("pending_pairs"))


def add_wheel(engine: Engine, number: int, *, new_project: bool) -> None:
    """Record a wheel of version 9.0 as the recorder would, the project marked dirty: of project
    ``number`` (listed, its pages there), or of a new project ``number``."""
    with engine.begin() as conn:
        if new_project:
            project_id = conn.execute(
                insert(Project)
                .values(
                    name=project_name(number), display_name=display_name(number), watched=True, dirty=True
                )
                .returning(Project.id)
            ).scalar_one()
        else:
            project_id = number
            conn.execute(
                update(Project)
                .where(Project.id == project_id)
                .values(dirty=True, dirty_generation=Project.dirty_generation + 1)
            )
        version_id = conn.execute(
            insert(Version)
            .values(project_id=project_id, version="9.0", yanked=False, priority=0)
            .returning(Version.id)
        ).scalar_one()
        conn.execute(
            insert(File).values(
                version_id=version_id, filename=f"{display_name(number)}-9.0-py3-none-any.whl", size=1,
                sha256="0" * 64, python_tag="py3", abi_tag="none", platform_tag="any",
                metadata_sha256=hashlib.sha256(METADATA.encode()).hexdigest(), core_metadata=METADATA,
                mirrored=False,
            )
        )  # fmt: skip
