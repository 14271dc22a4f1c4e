"""Rebuilds that keep their bytes: a build runs with SOURCE_DATE_EPOCH from its sdist, so the same
code built again is the same file, which keeps its name and adds nothing; a rebuild whose output
differs gets a build tag. Real builds on the local builder, through the real CLI."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import sys
import tarfile
from pathlib import Path

import pytest

from piwheels_ctl.agent import buildenv

from helpers import clean_env, piwheels
from indexserver import IndexServer
from sdists import make_sdist, setuptools_project

# A project whose build is not reproducible by itself: its setup.py writes a fresh random
# value into the package on every build, as projects that stamp a build id do.
STAMPED_SETUP = """\
import os
from setuptools import setup
with open("stamped.py", "w") as f:
    f.write("BUILD_ID = %r\\n" % os.urandom(8).hex())
setup(py_modules=["stamped"])
"""


def _files(data: Path) -> dict[str, str]:
    """The files rows of the farm: file name -> sha256."""
    with sqlite3.connect(data / "piwheels.db") as conn:
        return dict(conn.execute("SELECT filename, sha256 FROM files ORDER BY filename"))


def _wheels(data: Path, project: str) -> dict[str, str]:
    folder = data / "www" / "simple" / project
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.whl"))}


def test_the_epoch_is_the_newest_member_of_the_sdist(fixture_sdists: dict[str, Path], tmp_path: Path) -> None:
    sdist = fixture_sdists["c-ext"]
    with tarfile.open(sdist) as archive:
        newest = max(m.mtime for m in archive.getmembers())
    assert buildenv.source_date_epoch(str(sdist)) == str(newest)
    copy = tmp_path / sdist.name
    shutil.copyfile(sdist, copy)  # another builder, another mtime of the file itself: the same epoch
    assert buildenv.source_date_epoch(str(copy)) == str(newest)
    assert buildenv.source_date_epoch(str(tmp_path / "missing.tar.gz")) is None


@pytest.mark.build
def test_a_rebuild_of_unchanged_code_adds_nothing_and_other_bytes_get_a_build_tag(
    fixture_sdists: dict[str, Path], build_deps: Path, tmp_path: Path
) -> None:
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    shutil.copy(fixture_sdists["c-ext"], upstream)
    make_sdist(setuptools_project(tmp_path / "projects", "stamped", {"setup.py": STAMPED_SETUP}), upstream)
    for wheel in build_deps.glob("*.whl"):
        shutil.copy(wheel, upstream)
    data = tmp_path / "data"
    with IndexServer(upstream) as index:
        env = clean_env(
            HOME=str(tmp_path / "home"),
            PIWHEELS_DATA_DIR=str(data),
            PIWHEELS_UPSTREAM=index.url,
            PIWHEELS_PYTHONS=sys.executable,
            PIWHEELS_BUILD_TIMEOUT="600",
            PIWHEELS_DEBIAN_MIRROR="",
        )
        piwheels(env, "init")
        piwheels(env, "add", "c-ext", "stamped")
        piwheels(env, "run")
        first, first_rows = _wheels(data, "c-ext"), _files(data)
        assert len(first) == 1 and len(_wheels(data, "stamped")) == 1, (first, first_rows)
        for name in ("c-ext", "stamped"):
            piwheels(env, "rebuild", name)
        piwheels(env, "run")
    again = _wheels(data, "c-ext")
    assert again == first, f"a rebuild of unchanged code changed the published files: {first} -> {again}"
    rows = _files(data)
    assert {k: v for k, v in rows.items() if k.startswith("c_ext")} == {
        k: v for k, v in first_rows.items() if k.startswith("c_ext")
    }, rows
    stamped = sorted(_wheels(data, "stamped"))
    assert len(stamped) == 2 and stamped[0].startswith("stamped-1.0-1-"), (
        f"a rebuild with other bytes should get a build tag: {stamped}"
    )
    with sqlite3.connect(data / "piwheels.db") as conn:
        statuses = [s for (s,) in conn.execute("SELECT status FROM builds ORDER BY id")]
    assert statuses.count("success") == 4, statuses
