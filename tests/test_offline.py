"""A farm without an index or network: a folder upstream, and the pinned frontends put into
find_links by ``frontends fetch``. Real builds on the local builder, through the real CLI."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from piwheels_ctl.farm import frontend

from helpers import clean_env, piwheels
from indexserver import IndexServer


@pytest.mark.build
def test_a_folder_upstream_builds_once_the_frontends_are_fetched_into_find_links(
    fixture_sdists: dict[str, Path], build_deps: Path, tmp_path: Path
) -> None:
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
    )
    piwheels(env, "init")
    piwheels(env, "add", "c-ext")
    before = piwheels(env, "run", check=False)
    said = before.stdout + before.stderr
    assert f"uv {frontend.UV_VERSION}" in said and "piwheels-ctl frontends fetch" in said, said[-2000:]
    assert not list((data / "www" / "simple").glob("c-ext/*.whl"))

    with IndexServer(build_deps) as index:
        fetched = piwheels(env, "frontends", "fetch", "--index-url", index.url)
    names = sorted(p.name for p in links.iterdir())
    assert any(n.startswith(f"uv-{frontend.UV_VERSION}-") for n in names), (names, fetched.stdout)
    assert any(n.startswith(f"pip-{frontend.NEWEST}-") for n in names), (names, fetched.stdout)

    after = piwheels(env, "run")  # no index anywhere now: only the folders
    wheels = sorted(p.name for p in (data / "www" / "simple" / "c-ext").glob("*.whl"))
    assert len(wheels) == 1, (wheels, after.stdout[-2000:], after.stderr[-2000:])


def test_fetch_names_the_folder_it_needs_and_refuses_an_unknown_platform(tmp_path: Path) -> None:
    env = clean_env(PIWHEELS_DATA_DIR=str(tmp_path / "data"), PIWHEELS_UPSTREAM=str(tmp_path))
    piwheels(env, "init")
    proc = piwheels(env, "frontends", "fetch", check=False)
    assert proc.returncode != 0 and "find_links" in proc.stderr, proc.stderr
    proc = piwheels(
        env, "frontends", "fetch", "--dest", str(tmp_path / "l"), "--platform", "sparc", check=False
    )
    assert proc.returncode != 0 and "sparc" in proc.stderr, proc.stderr
