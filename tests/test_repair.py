"""Portable wheels, for real: a fixture C extension linking libyaml (outside every manylinux
policy) built by the local builder with ``repair = "auditwheel"`` and without. The repaired wheel
is tagged for this machine's glibc's manylinux policy, carries libyaml inside, needs nothing from
apt (``deps``), and pip installs and imports it in a venv of the system's Python where libyaml is
not there for the loader; the unrepaired one fails there with the loader's "cannot open shared
object file". A wheel that cannot be repaired keeps its linux_* tag, with auditwheel's reason as
a note on its page.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from pypi_simple import PYPI_SIMPLE_ENDPOINT

from piwheels_ctl.config import Settings
from piwheels_ctl.farm import frontend

from helpers import clean_env, piwheels, serving
from indexserver import IndexServer
from sdists import make_sdist, pip_env

pytestmark = pytest.mark.build

FIXTURES = Path(__file__).parent / "packages-py2"
SYSTEM_PYTHON = "/usr/bin/python3"
LIBDIR = Path("/usr/lib") / f"{os.uname().machine}-linux-gnu"
GLIBC = os.confstr("CS_GNU_LIBC_VERSION").split()[-1].replace(".", "_")  # type: ignore[union-attr]
POLICY = f"manylinux_{GLIBC}_{os.uname().machine}"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory, build_deps: Path) -> Iterator[IndexServer]:
    """The fixtures' sdists, the builds' requirements, and the repair's pinned tools (fetched
    from PyPI once, as a farm fetches them from its build index)."""
    if not (LIBDIR / "libyaml-0.so.2").exists() or not Path("/usr/include/yaml.h").exists():
        pytest.fail("libyaml-dev is needed (apt-get install libyaml-dev)", pytrace=False)
    folder = tmp_path_factory.mktemp("repair-upstream")
    make_sdist(FIXTURES / "yaml-ext", folder)
    for wheel in build_deps.glob("*.whl"):
        shutil.copy(wheel, folder)
    settings = Settings(data_dir=tmp_path_factory.mktemp("repair-tools"))
    for wheel in frontend.repair_tools(
        settings, "cp311-cp311-linux_" + os.uname().machine, PYPI_SIMPLE_ENDPOINT, []
    ):
        shutil.copy(wheel, folder)
    with IndexServer(folder) as index:
        yield index


@pytest.fixture
def data() -> Iterator[Path]:
    """A data folder with a short path: the build proxy's socket path in it is limited."""
    folder = Path(tempfile.mkdtemp(prefix="rp-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _env(data: Path, upstream: IndexServer, repair: str) -> dict[str, str]:
    return clean_env(PIWHEELS_DATA_DIR=str(data), PIWHEELS_UPSTREAM=upstream.url,
                     PIWHEELS_PYTHONS=sys.executable, PIWHEELS_BUILD_TIMEOUT="900",
                     PIWHEELS_REPAIR=repair)  # fmt: skip


def _farm(data: Path, upstream: IndexServer, repair: str) -> dict[str, str]:
    env = _env(data, upstream, repair)
    piwheels(env, "init")
    piwheels(env, "add", "yaml-ext")
    done = piwheels(env, "run", check=False)
    assert "built 1, failed 0" in done.stdout, done.stdout + done.stderr[-3000:]
    piwheels(env, "publish")
    return env


def _hidden_library_argv(tmp_path: Path, argv: list[str]) -> list[str]:
    """``argv`` in bubblewrap where the loader's library folder holds everything but libyaml: a
    folder of links to the real one's entries, libyaml's left out."""
    links = tmp_path / "libdir-without-libyaml"
    links.mkdir()
    real = "/run/real-libdir"
    for entry in os.listdir(LIBDIR):
        if not entry.startswith("libyaml"):
            (links / entry).symlink_to(f"{real}/{entry}")
    return ["bwrap", "--dev-bind", "/", "/", "--ro-bind", str(LIBDIR), real,
            "--ro-bind", str(links), str(LIBDIR), *argv]  # fmt: skip


def _install_and_import(tmp_path: Path, data: Path, name: str) -> subprocess.CompletedProcess[str]:
    """pip installs yaml-ext from the farm's index into a fresh venv of the system's Python, which
    then imports it with libyaml out of the loader's view."""
    venv = tmp_path / f"venv-{name}"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(venv)], check=True, timeout=300)
    with serving(data / "www") as url:
        done = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--index-url", f"{url}/simple/", "yaml-ext"],
            capture_output=True, text=True, timeout=300, env=pip_env(),
        )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    code = "import yaml_ext; print('libyaml', yaml_ext.version())"
    return subprocess.run(_hidden_library_argv(tmp_path, [str(venv / "bin" / "python"), "-c", code]),
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_a_repaired_wheel_carries_its_library_and_imports_where_it_is_missing(
    tmp_path: Path, upstream: IndexServer, data: Path
) -> None:
    env = _farm(data, upstream, "auditwheel")
    wheels = [p.name for p in (data / "www" / "simple" / "yaml-ext").glob("*.whl")]
    assert len(wheels) == 1 and wheels[0].endswith(f"-{POLICY}.whl"), wheels
    with zipfile.ZipFile(data / "www" / "simple" / "yaml-ext" / wheels[0]) as archive:
        grafted = [n for n in archive.namelist() if n.startswith("yaml_ext.libs/libyaml")]
    assert grafted, f"libyaml is not inside the repaired wheel {wheels[0]}"
    deps = piwheels(env, "deps", "yaml-ext").stdout
    assert "apt install" not in deps, f"deps asks to install something for a repaired wheel:\n{deps}"
    log = piwheels(env, "logs", "yaml-ext", "1.0").stdout
    assert "auditwheel repair" in log and "[piwheels] repaired:" in log, log[-2000:]
    done = _install_and_import(tmp_path, data, "repaired")
    assert done.returncode == 0 and "libyaml 0." in done.stdout, done.stdout + done.stderr


def test_without_repair_the_same_wheel_needs_libyaml_and_does_not_load_without_it(
    tmp_path: Path, upstream: IndexServer, data: Path
) -> None:
    env = _farm(data, upstream, "none")
    wheels = [p.name for p in (data / "www" / "simple" / "yaml-ext").glob("*.whl")]
    assert len(wheels) == 1 and wheels[0].endswith(f"-linux_{os.uname().machine}.whl"), wheels
    deps = piwheels(env, "deps", "yaml-ext").stdout
    assert "sudo apt install libyaml-0-2" in deps, deps
    done = _install_and_import(tmp_path, data, "plain")
    assert done.returncode != 0, f"the unrepaired wheel imported without libyaml: {done.stdout}"
    assert "libyaml-0.so.2: cannot open shared object file" in done.stderr, done.stderr


def test_a_wheel_auditwheel_cannot_repair_keeps_its_tag_with_the_reason(
    upstream: IndexServer, data: Path
) -> None:
    """auditwheel's refusal leaves the build a success with a note (an auditwheel in the farm's
    frontends folder that refuses every wheel stands for a wheel it cannot repair)."""
    env = _env(data, upstream, "auditwheel")
    piwheels(env, "init")
    # A frontends folder whose auditwheel is not one: the repair fails, the build does not.
    tools = data / "frontends"
    tools.mkdir(parents=True)
    broken = tools / "auditwheel-6.1.0-py3-none-any.whl"
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("auditwheel/__init__.py", "")
        archive.writestr(
            "auditwheel/__main__.py", "raise SystemExit('auditwheel: no policy fits this wheel')\n"
        )
    piwheels(env, "add", "yaml-ext")
    out = piwheels(env, "run", check=False).stdout
    assert "built 1, failed 0" in out, out
    wheels = [p.name for p in (data / "www" / "simple" / "yaml-ext").glob("*.whl")]
    assert len(wheels) == 1 and wheels[0].endswith(f"-linux_{os.uname().machine}.whl"), wheels
    piwheels(env, "publish")
    page = json.loads((data / "www" / "project" / "yaml-ext" / "json").read_text())
    notes = [n for r in page["releases"] for c in r["cells"].values() for n in c.get("notes") or []]
    assert any("not repaired" in n and "no policy fits this wheel" in n for n in notes), page
    html = (data / "www" / "project" / "yaml-ext" / "index.html").read_text()
    assert "no policy fits this wheel" in html, "auditwheel's reason is not on the project's page"
