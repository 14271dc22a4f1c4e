"""What the upstream already ships is not built: it covers its ABIs and is mirrored into our index.

A real index on loopback (tests/indexserver.py) serves a pure wheel and an sdist; the version is
not queued for the ABIs the wheel installs on, the controller fetches the wheel, checks it and
publishes it, and pip installs it from our index alone. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from piwheels_ctl.catalog.mirror import MIRROR_ATTEMPTS, mirror
from piwheels_ctl.catalog.projects import add
from piwheels_ctl.catalog.requirements import parse_wanted
from piwheels_ctl.config import Settings
from piwheels_ctl.db.engine import Database
from piwheels_ctl.db.models import Abi, Build, Coverage, File, UpstreamCoverage, UpstreamWheel
from piwheels_ctl.errors import UpstreamError
from piwheels_ctl.farm.registry import ensure_abi
from piwheels_ctl.queue.claims import pending
from piwheels_ctl.upstream.source import open_upstream

from helpers import clean_env, piwheels, serving
from indexserver import IndexServer
from wheels import make_wheel

CP311 = ("cp311", "cp311", "linux_x86_64")
CP27 = ("cp27", "cp27mu", "linux_x86_64")  # a py3 wheel does not install here: still built
WHEEL = "mirr-1.0-py3-none-any.whl"


@pytest.fixture
def upstream_dir(tmp_path: Path) -> Path:
    """An upstream folder with mirr 1.0 as an sdist (not a buildable one) and a pure wheel."""
    folder = tmp_path / "upstream"
    folder.mkdir()
    (folder / "mirr-1.0.tar.gz").write_bytes(b"never built: the upstream's wheel covers it")
    make_wheel(folder, "mirr", "1.0", requires_python=">=3.8")
    return folder


@pytest.fixture
def index(upstream_dir: Path) -> Iterator[IndexServer]:
    with IndexServer(upstream_dir) as server:
        yield server


def _abis(db: Database) -> None:
    with db.session() as session:
        for python, abi, platform in (CP311, CP27):
            session.add(
                Abi(tag=f"{python}-{abi}-{platform}", python_tag=python, abi_tag=abi, platform_tag=platform)
            )


def _add(db: Database, index: IndexServer) -> None:
    with open_upstream(index.url, timeout=10) as upstream, db.session() as session:
        add(session, upstream, [parse_wanted("mirr==1.0", "test")])


def _queue(db: Database) -> list[tuple[str, str, str]]:
    with db.reader() as session:
        return [(j.name, j.version, j.abi) for j in pending(session)]


def _settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url, mirror_timeout=30)


def test_a_version_with_a_pure_wheel_upstream_is_not_queued_and_is_mirrored(
    db: Database, database_url: str, index: IndexServer, upstream_dir: Path, tmp_path: Path
) -> None:
    _abis(db)
    _add(db, index)
    assert _queue(db) == [("mirr", "1.0", "-".join(CP27))], "the py3 wheel covers cp311, not cp27"
    with db.reader() as session:
        covered = session.execute(select(Abi.tag).join(UpstreamCoverage, UpstreamCoverage.abi_id == Abi.id))
        assert [tag for (tag,) in covered] == ["-".join(CP311)]
    settings = _settings(tmp_path, database_url)
    with open_upstream(index.url, timeout=10) as upstream:
        report = mirror(db, settings, upstream)
    assert report.mirrored == [WHEEL], report
    served = settings.www_dir / "simple" / "mirr" / WHEEL
    assert served.read_bytes() == (upstream_dir / WHEEL).read_bytes()
    with db.reader() as session:
        file = session.scalars(select(File)).one()
        assert (file.filename, file.mirrored, file.build_id) == (WHEEL, True, None)
        assert file.sha256 == hashlib.sha256((upstream_dir / WHEEL).read_bytes()).hexdigest()
        assert "Requires-Python: >=3.8" in file.core_metadata
        assert session.scalars(select(UpstreamWheel.file_id)).one() == file.id
        assert [c.abi_id for c in session.scalars(select(Coverage))], "our wheel now covers cp311 too"
        assert session.scalars(select(Build)).all() == []
    assert _queue(db) == [("mirr", "1.0", "-".join(CP27))]
    with open_upstream(index.url, timeout=10) as upstream:
        assert mirror(db, settings, upstream).mirrored == [], "a mirrored wheel is fetched once"


def test_a_wheel_whose_bytes_differ_from_the_listed_hash_is_retried_then_built(
    db: Database, database_url: str, index: IndexServer, upstream_dir: Path, tmp_path: Path
) -> None:
    _abis(db)
    _add(db, index)
    settings = _settings(tmp_path, database_url)
    # The page listed these bytes' sha256 at sync time; the file served now is another one.
    make_wheel(upstream_dir, "mirr", "1.0", extra={"other.py": b"changed after the listing\n"})
    for attempt in range(1, MIRROR_ATTEMPTS + 1):
        with open_upstream(index.url, timeout=10) as upstream:
            report = mirror(db, settings, upstream)
        assert report.mirrored == []
        if attempt < MIRROR_ATTEMPTS:
            assert [f for f, _e in report.retried] == [WHEEL]
            assert "differs from the" in report.retried[0][1], report.retried
            assert _queue(db) == [("mirr", "1.0", "-".join(CP27))], "still covered while retried"
    assert [f for f, _e in report.given_up] == [WHEEL], report
    assert f"{MIRROR_ATTEMPTS} fetches failed" in report.given_up[0][1]
    assert sorted(_queue(db)) == [("mirr", "1.0", "-".join(CP27)), ("mirr", "1.0", "-".join(CP311))]
    assert not (settings.www_dir / "simple" / "mirr" / WHEEL).exists()
    with db.reader() as session:
        assert session.scalars(select(File)).all() == []


def test_a_wheel_that_fails_verification_is_given_up_at_once_and_built(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "hostile"
    folder.mkdir()
    (folder / "mirr-1.0.tar.gz").write_bytes(b"sdist")
    make_wheel(folder, "mirr", "1.0", unrecorded={"../evil.py": b"escape\n"})
    _abis(db)
    settings = _settings(tmp_path, database_url)
    with IndexServer(folder) as server:
        _add(db, server)
        with open_upstream(server.url, timeout=10) as upstream:
            report = mirror(db, settings, upstream)
    assert report.mirrored == [] and [f for f, _e in report.given_up] == [WHEEL], report
    assert "evil.py" in report.given_up[0][1], report.given_up
    assert ("mirr", "1.0", "-".join(CP311)) in _queue(db)
    with db.reader() as session:
        wheel = session.scalars(select(UpstreamWheel)).one()
        assert wheel.given_up and wheel.file_id is None
        assert session.scalars(select(UpstreamCoverage)).all() == []


def test_an_abi_added_later_is_covered_by_the_wheels_already_known(db: Database, index: IndexServer) -> None:
    _add(db, index)  # no ABI yet: nothing to cover
    with db.reader() as session:
        assert session.scalars(select(UpstreamCoverage)).all() == []
    with db.session() as session:
        ensure_abi(session, dict(zip(("python_tag", "abi_tag", "platform_tag"), CP311, strict=True)))
    assert _queue(db) == []


def _pip_install(index_url: str, target: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--index-url",
            index_url,
            "--target",
            str(target),
            "mirr==1.0",
        ],
        env=clean_env(PIP_CONFIG_FILE="/dev/null"),
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def test_run_mirrors_instead_of_building_and_pip_installs_from_our_index_alone(
    database_url: str, index: IndexServer, tmp_path: Path
) -> None:
    env = clean_env(
        HOME=str(tmp_path),
        PIWHEELS_DATA_DIR=str(tmp_path / "data"),
        PIWHEELS_DATABASE_URL=database_url,
        PIWHEELS_UPSTREAM=index.url,
        PIWHEELS_PYTHONS=sys.executable,
        PIWHEELS_DEBIAN_MIRROR="",
    )
    piwheels(env, "init")
    piwheels(env, "add", "mirr==1.0")
    run = piwheels(env, "run")
    assert "mirrored 1 wheel(s) from the upstream" in run.stdout, run.stdout + run.stderr
    assert "built 0, failed 0, remaining 0" in run.stdout, run.stdout
    status = json.loads(piwheels(env, "status", "--json").stdout)
    assert status["upstream_covered"] == 1 and status["mirrored"] == 1, status
    assert status["builds"] == {"building": 0, "success": 0, "failed": 0}, status
    shown = piwheels(env, "status").stdout
    assert "mirrored from upstream" in shown, shown
    piwheels(env, "publish")
    www = tmp_path / "data" / "www"
    page = (www / "project" / "mirr" / "index.html").read_text()
    assert "mirrored from upstream" in page
    with serving(www) as url:
        with urllib.request.urlopen(f"{url}/simple/mirr/{WHEEL}.metadata") as answer:
            assert b"Name: mirr" in answer.read()
        proc = _pip_install(f"{url}/simple/", tmp_path / "site")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "mirr.py").read_text() == "VERSION = '1.0'\n"


def test_with_mirroring_off_the_version_is_still_not_built(index: IndexServer, tmp_path: Path) -> None:
    env = clean_env(
        HOME=str(tmp_path),
        PIWHEELS_DATA_DIR=str(tmp_path / "data"),
        PIWHEELS_UPSTREAM=index.url,
        PIWHEELS_PYTHONS=sys.executable,
        PIWHEELS_MIRROR_UPSTREAM="false",
        PIWHEELS_DEBIAN_MIRROR="",
    )
    piwheels(env, "init")
    piwheels(env, "add", "mirr==1.0")
    run = piwheels(env, "run")
    assert "mirrored" not in run.stdout and "built 0, failed 0, remaining 0" in run.stdout, run.stdout
    status = json.loads(piwheels(env, "status", "--json").stdout)
    assert (status["upstream_covered"], status["mirrored"], status["pending"]) == (1, 0, 0), status
    piwheels(env, "publish")
    page = (tmp_path / "data" / "www" / "project" / "mirr" / "index.html").read_text()
    assert "on the upstream, not built" in page


@pytest.mark.parametrize("url", ["http://127.0.0.2:9/demo-1.0-py3-none-any.whl", "http://10.1.2.3/x.whl"])
def test_a_page_cannot_send_the_controller_to_this_machine_or_its_network(
    index: IndexServer, tmp_path: Path, url: str
) -> None:
    # Another host than the index's, at a loopback or private address: refused before any
    # connection (nothing listens there), whatever the page claims the file is.
    with (
        open_upstream(index.url, timeout=10) as upstream,
        pytest.raises(UpstreamError, match="not a public address"),
    ):
        upstream.download(url, tmp_path / "x.whl", sha256="0" * 64, limit=1 << 20, seconds=10)
    assert not (tmp_path / "x.whl").exists()
