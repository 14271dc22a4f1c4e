"""Fixtures shared by the test modules: fixture sdists, build requirements, and real databases."""

from __future__ import annotations

import itertools
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from packaging.version import Version
from psycopg import sql
from pypi_simple import PYPI_SIMPLE_ENDPOINT
from sqlalchemy import select

from piwheels_ctl.db.engine import Database, upgrade
from piwheels_ctl.db.models import Build, Project
from piwheels_ctl.db.models import Version as VersionRow
from piwheels_ctl.farm import frontend

from helpers import clean_env, free_port, piwheels
from indexserver import IndexServer
from sdists import PACKAGES, fixture_projects, make_sdist, pip_env, project_name_version

# Debian's PyPy 3.9 is the oldest interpreter the tests build with; the build requirements
# downloaded for it work on every later Python too.
OLDEST_BUILD_PYTHON = "3.9"

_database_numbers = itertools.count()


@pytest.fixture(scope="session")
def fixture_sdists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every project of ``tests/packages`` as an sdist, by project name."""
    dest = tmp_path_factory.mktemp("sdists")
    return {project_name_version(p)[0]: make_sdist(p, dest) for p in fixture_projects()}


# The pinned pips of piwheels_ctl.farm.frontend for the Pythons the tests build with.
FRONTEND_PIPS = {"3.9": frontend.pip_version((3, 9)), "3.11": frontend.pip_version((3, 11))}


@pytest.fixture(scope="session")
def build_deps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wheels of setuptools and wheel (and their dependencies) for isolated builds, and the
    pinned pips and uv the builds run with."""
    dest = tmp_path_factory.mktemp("build-deps")
    downloads = [(OLDEST_BUILD_PYTHON, ["setuptools", "wheel"])]
    downloads += [(python, [f"pip=={pip}"]) for python, pip in FRONTEND_PIPS.items()]
    # uv, the frontend of Python 3.8 and later, for this machine's platform and the ARM tier's.
    for machine in sorted({os.uname().machine, "armv7l"}):
        downloads.append((OLDEST_BUILD_PYTHON, ["--platform", f"manylinux_2_17_{machine}", "--no-deps",
                                                f"uv=={frontend.UV_VERSION}"]))  # fmt: skip
    for python, wanted in downloads:
        command = [
            sys.executable, "-m", "pip", "download", "--only-binary", ":all:", "--python-version", python,
            "--dest", str(dest), "--index-url", PYPI_SIMPLE_ENDPOINT, *wanted,
        ]  # fmt: skip
        proc = subprocess.run(
            command,
            env=pip_env(),
            capture_output=True,
            text=True,
            timeout=600,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            pytest.fail(f"downloading {wanted} failed:\n{proc.stdout}{proc.stderr}", pytrace=False)
    return dest


def _postgres_bindir() -> Path:
    initdbs = list(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not initdbs:
        pytest.fail(
            "PostgreSQL server programs not found in /usr/lib/postgresql/*/bin: "
            "install Debian's postgresql package to run the PostgreSQL tests",
            pytrace=False,
        )
    return max(initdbs, key=lambda p: Version(p.parent.parent.name)).parent


def _run(command: list[str]) -> None:
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}", pytrace=False
        )


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server of its own on 127.0.0.1, trusting loopback; its URL without a database."""
    bindir = _postgres_bindir()
    # PostgreSQL refuses to run as root: then it runs as Debian's postgres user, in a folder
    # of its own outside pytest's temp folders, which only root can enter.
    as_postgres: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="piwheels-postgres-"))
    try:
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail("running as root needs the 'postgres' user of Debian's postgresql", pytrace=False)
            shutil.chown(root, "postgres", "postgres")
            as_postgres = ["runuser", "-u", "postgres", "--"]
        data, log = root / "data", root / "server.log"
        port = free_port()
        _run([*as_postgres, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
              "-E", "UTF8", "--locale=C", "--no-sync"])  # fmt: skip
        # The socket goes to our folder: the system's /var/run/postgresql may be missing or taken.
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root} "
            "-c fsync=off -c full_page_writes=off -c synchronous_commit=off"
        )
        pg_ctl = [*as_postgres, str(bindir / "pg_ctl"), "-D", str(data)]
        proc = subprocess.run(
            [*pg_ctl, "-l", str(log), "-w", "-t", "60", "-o", options, "start"],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            server_log = log.read_text() if log.exists() else ""
            pytest.fail(f"PostgreSQL did not start:\n{proc.stdout}{proc.stderr}{server_log}", pytrace=False)
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/"
        finally:
            _run([*pg_ctl, "-m", "fast", "-w", "stop"])
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres, id="postgresql")],
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database: a SQLite file, or a database of its own on the session's server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'piwheels.db'}"
        return
    base: str = request.getfixturevalue("postgres_server")
    admin = base.replace("postgresql+psycopg://", "postgresql://", 1) + "postgres"
    name = f"test_{next(_database_numbers)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield base + name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            # FORCE ends the connections a test left open, which would block the drop.
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """A ``Database`` on ``database_url`` with the schema created, disposed of afterwards."""
    database = Database(database_url)
    try:
        upgrade(database.engine)
        yield database
    finally:
        database.dispose()


@dataclass
class SiteFarm:
    """A farm whose site shows every kind of cell: built, covered, failed, skipped, pending."""

    env: dict[str, str]
    data: Path

    @property
    def www(self) -> Path:
        return self.data / "www"


def _suggest(data: Path, name: str, packages: list[Any]) -> None:
    """Record ``packages`` as the fix of ``name``'s failed builds, as a Contents lookup would
    (the lookup itself is tested in test_hints.py against a mirror on loopback)."""
    db = Database(f"sqlite:///{data / 'piwheels.db'}")
    try:
        with db.session() as session:
            for build in session.scalars(
                select(Build).join(Build.version).join(VersionRow.project).where(Project.name == name)
            ):
                if build.failure_reason is not None:
                    build.failure_packages = packages
    finally:
        db.dispose()


PURE_SUMMARY = "A pure module that always builds"
PURE_HOME = "https://example.org/pure-ok"


@pytest.fixture(scope="session")
def site_farm(
    tmp_path_factory: pytest.TempPathFactory, fixture_sdists: dict[str, Path], build_deps: Path
) -> Iterator[SiteFarm]:
    """Real builds on the local builder (CPython, and Debian's PyPy when present), published:
    pure-ok 1.0 built, 0.9 pending, 0.8 failed (a missing header); fails-header failed; py2-only
    skipped; c-ext pending."""
    root = tmp_path_factory.mktemp("site-farm")
    upstream = root / "upstream"
    upstream.mkdir()
    for name in ("fails-header", "py2-only", "c-ext"):
        shutil.copy(fixture_sdists[name], upstream)
    # pure-ok with a summary and a home page; 0.7 is never asked for.
    for version, source in (
        ("1.0", "pure-ok"),
        ("0.9", "pure-ok"),
        ("0.8", "fails-header"),
        ("0.7", "pure-ok"),
    ):
        older = root / f"pure-ok-{version}"
        shutil.copytree(PACKAGES / source, older)
        toml = older / "pyproject.toml"
        text = re.sub(
            r"(?m)^version = .*$", f'version = "{version}"\ndescription = "{PURE_SUMMARY}"', toml.read_text()
        )
        text = re.sub(r"(?m)^name = .*$", 'name = "pure-ok"', text)
        toml.write_text(text + f'\n[project.urls]\nHomepage = "{PURE_HOME}"\n')
        make_sdist(older, upstream)
    for wheel in build_deps.glob("*.whl"):
        shutil.copy(wheel, upstream)
    home = root / "home"
    home.mkdir()
    pythons = [sys.executable] + ([pypy] if (pypy := shutil.which("pypy3")) else [])
    with IndexServer(upstream) as index:
        env = clean_env(
            HOME=str(home),
            PIWHEELS_DATA_DIR=str(root / "data"),
            PIWHEELS_UPSTREAM=index.url,
            PIWHEELS_PYTHONS=",".join(pythons),
            PIWHEELS_SLOTS="2",
            PIWHEELS_BUILD_TIMEOUT="600",  # ten times what a PyPy C build takes on a busy machine
            PIWHEELS_PUBLIC_URL="http://pi.example.org/",
            PIWHEELS_DEBIAN_MIRROR="",  # package hints are tested against a mirror of their own
        )
        piwheels(env, "init")
        piwheels(env, "add", "pure-ok==1.0", "pure-ok==0.8", "fails-header")
        piwheels(env, "run")
        # Both failed for want of no_such_header_xyz.h: one stored as before issue 24 (names),
        # one with why each is listed.
        _suggest(root / "data", "pure-ok", ["libnosuchheader-dev"])
        why = "ships /usr/include/nosuch/no_such_header_xyz.h (in the folder nosuch/ of /usr/include)"
        _suggest(root / "data", "fails-header", [{"package": "libnosuchheader-dev", "why": why}])
        piwheels(env, "add", "pure-ok==0.9", "py2-only", "c-ext")
        piwheels(env, "skip", "py2-only", "--reason", "upstream supports Python 2 only")
        piwheels(env, "publish")
        yield SiteFarm(env, root / "data")
