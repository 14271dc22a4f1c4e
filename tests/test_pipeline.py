"""The whole pipeline on one machine, for real: sync, queue, build, verify, record, publish, serve.

The fixture projects are turned into sdists, served by a local index, built by real ``pip wheel``
with CPython and Debian's PyPy, published, served by ``piwheels-ctl serve`` and installed by
real pip and uv into fresh virtual environments.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from piwheels_ctl.db.engine import Database
from piwheels_ctl.db.models import Build, BuildStatus, File

from helpers import clean_env, debian_venv, free_port, piwheels
from indexserver import IndexServer

pytestmark = pytest.mark.build

PROJECTS = ["pure-ok", "c-ext", "abi3-ext", "fails-header", "py2-only", "hangs", "writes-home", "wrong-name"]


@dataclass
class Farm:
    env: dict[str, str]
    data: Path
    index: IndexServer
    run_output: str

    def db(self) -> Database:
        return Database(f"sqlite:///{self.data / 'piwheels.db'}")


@pytest.fixture(scope="module")
def farm(
    tmp_path_factory: pytest.TempPathFactory, fixture_sdists: dict[str, Path], build_deps: Path
) -> Iterator[Farm]:
    pypy = shutil.which("pypy3")
    assert pypy, "Debian's pypy3 is needed (apt-get install pypy3 pypy3-dev)"
    root = tmp_path_factory.mktemp("farm")
    upstream = root / "upstream"
    upstream.mkdir()
    for name in PROJECTS:
        shutil.copy(fixture_sdists[name], upstream)
    for wheel in build_deps.glob("*.whl"):
        shutil.copy(wheel, upstream)
    home = root / "home"
    home.mkdir()
    with IndexServer(upstream) as index:
        env = clean_env(
            HOME=str(home),
            PIWHEELS_DATA_DIR=str(root / "data"),
            PIWHEELS_UPSTREAM=index.url,
            PIWHEELS_PYTHONS=f"{sys.executable},{pypy}",
            PIWHEELS_SLOTS="2",
            PIWHEELS_BUILD_TIMEOUT="600",  # ten times what a PyPy C build takes on a busy machine
        )
        piwheels(env, "init")
        piwheels(env, "add", *[p for p in PROJECTS if p != "hangs"])
        run = piwheels(env, "run")
        # The hanging project gets a short limit of its own: it is the only one that needs one.
        piwheels(env, "add", "hangs")
        hangs = piwheels({**env, "PIWHEELS_BUILD_TIMEOUT": "5"}, "run")
        piwheels(env, "publish")
        output = run.stdout + run.stderr + hangs.stdout + hangs.stderr
        yield Farm(env, root / "data", index, output)


def _builds(farm: Farm) -> dict[tuple[str, str], Build]:
    db = farm.db()
    try:
        with db.session() as session:
            builds = session.scalars(select(Build)).all()
            return {(b.version.project.name, b.abi.python_tag): b for b in builds}
    finally:
        db.dispose()


def test_run_builds_every_ok_project_and_explains_failures(farm: Farm) -> None:
    builds = _builds(farm)
    by_project: dict[str, list[Build]] = {}
    for (name, _abi), build in builds.items():
        by_project.setdefault(name, []).append(build)
    # A pure-Python project is built once and covers CPython and PyPy.
    assert len(by_project["pure-ok"]) == 1
    assert by_project["pure-ok"][0].status is BuildStatus.SUCCESS
    # A C extension is built for each ABI.
    assert sorted(b.abi.python_tag[:2] for b in by_project["c-ext"]) == ["cp", "pp"]
    c_ext = [(b.status, b.failure_reason, b.failure_detail) for b in by_project["c-ext"]]
    assert [status for status, _reason, _detail in c_ext] == [BuildStatus.SUCCESS] * 2, c_ext
    header = by_project["fails-header"]
    assert {b.failure_reason for b in header} == {"missing-header"}
    assert {b.failure_detail for b in header} == {"no_such_header_xyz.h"}
    assert {b.failure_reason for b in by_project["hangs"]} == {"timeout"}
    assert {b.failure_reason for b in by_project["py2-only"]} == {"python2-only"}
    assert {b.failure_reason for b in by_project["wrong-name"]} == {"invalid-wheel"}
    status = json.loads(piwheels(farm.env, "status", "--json").stdout)
    assert status["pending"] == 0
    assert status["builds"]["building"] == 0
    # The compiler cache's figures of each build that compiled (an ABI's build of c-ext that
    # ran while the other held the project's cache compiled without one).
    counted = [(b.ccache_hits, b.ccache_misses) for b in by_project["c-ext"] if b.ccache_hits is not None]
    assert counted and all(hits + (misses or 0) >= 1 for hits, misses in counted), counted
    assert status["ccache"]["builds"] >= len(counted) and status["ccache"]["hit_rate"] is not None, status
    shown = piwheels(farm.env, "status").stdout
    assert "ccache, last" in shown and "% hits (" in shown, shown


def test_builds_leave_the_real_home_alone(farm: Farm) -> None:
    home = Path(farm.env["HOME"])
    assert list(home.iterdir()) == []
    builds = _builds(farm)
    assert {b.status for (name, _), b in builds.items() if name == "writes-home"} == {BuildStatus.SUCCESS}


def test_every_recorded_file_is_on_disk_with_its_hash(farm: Farm) -> None:
    db = farm.db()
    try:
        with db.session() as session:
            files = session.scalars(select(File)).all()
            assert files
            for file in files:
                path = farm.data / "www" / "simple" / file.version.project.name / file.filename
                assert path.stat().st_size == file.size
                meta = path.with_name(file.filename + ".metadata").read_bytes()
                with zipfile.ZipFile(path) as wheel:
                    (entry,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
                    assert wheel.read(entry) == meta
    finally:
        db.dispose()


def test_logs_command_prints_the_build_log(farm: Farm) -> None:
    out = piwheels(farm.env, "logs", "fails-header", "1.0").stdout
    assert "no_such_header_xyz.h" in out
    assert "missing-header" in out


def test_second_run_has_nothing_to_do(farm: Farm) -> None:
    out = piwheels(farm.env, "run").stdout
    assert "built 0, failed 0, remaining 0" in out


@pytest.fixture(scope="module")
def served(farm: Farm) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("piwheels-ctl")), "serve", "--port", str(port)],
        env=farm.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/simple/"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5):
                    break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "serve did not come up"
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stderr:
            proc.stderr.close()


def _venv(path: Path) -> Path:
    return debian_venv(path, with_pip=False)


def test_pip_installs_from_the_served_index(tmp_path: Path, served: str) -> None:
    python = debian_venv(tmp_path / "venv")
    env = clean_env(PIP_CONFIG_FILE="/dev/null", PIP_DISABLE_PIP_VERSION_CHECK="1")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--index-url", served, "c-ext", "pure-ok", "abi3-ext"],
        check=True,
        env=env,
        capture_output=True,
    )
    check = "import c_ext, pure_ok, abi3_ext; assert c_ext.add(2, 3) == 5"
    subprocess.run([str(python), "-c", check], check=True)


def test_uv_installs_from_the_served_index(tmp_path: Path, served: str) -> None:
    uv = Path(sys.executable).with_name("uv")
    python = _venv(tmp_path / "venv")
    env = clean_env(UV_NO_CONFIG="1", UV_CACHE_DIR=str(tmp_path / "uv-cache"))
    subprocess.run(
        [str(uv), "pip", "install", "--python", str(python), "--index-url", served, "c-ext", "pure-ok"],
        check=True,
        env=env,
        capture_output=True,
    )
    subprocess.run([str(python), "-c", "import c_ext; assert c_ext.add(1, 2) == 3"], check=True)
