"""The CLI as a new user meets it: skips that show and can be lifted, rebuild of what was tried,
the queue's limits, status's wording, no stray database, exit codes, serve's first line."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import select

from piwheels_ctl.db.engine import Database
from piwheels_ctl.db.models import Abi, Build, BuildStatus, Version

from helpers import PIWHEELS, clean_env, piwheels
from sdists import PACKAGES, make_sdist


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A data dir whose upstream is a folder with three versions of pure-ok."""
    upstream = tmp_path / "upstream"
    for version in ("0.9", "1.0", "1.1"):
        copy = tmp_path / f"src-{version}"
        shutil.copytree(PACKAGES / "pure-ok", copy)
        toml = copy / "pyproject.toml"
        toml.write_text(toml.read_text().replace('version = "1.0"', f'version = "{version}"'))
        make_sdist(copy, upstream)
    env = clean_env(PIWHEELS_DATA_DIR=str(tmp_path / "data"), PIWHEELS_UPSTREAM=str(upstream))
    piwheels(env, "init")
    return env


def _built(env: dict[str, str], version: str) -> None:
    """Record a finished build of pure-ok ``version`` (what a run would have left)."""
    piwheels(env, "status")  # registers the local builder's ABIs
    db = Database(f"sqlite:///{Path(env['PIWHEELS_DATA_DIR']) / 'piwheels.db'}")
    try:
        with db.session() as session:
            row = session.scalars(select(Version).where(Version.version == version)).one()
            abi = session.scalars(select(Abi)).first()
            assert abi is not None
            session.add(Build(version_id=row.id, abi_id=abi.id, status=BuildStatus.FAILED))
    finally:
        db.dispose()


def test_skip_shows_in_status_and_queue_and_unskip_lifts_it(env: dict[str, str]) -> None:
    piwheels(env, "add", "pure-ok")
    piwheels(env, "skip", "pure-ok==1.0", "--reason", "breaks the Pi")
    queue = piwheels(env, "queue").stdout
    assert "pure-ok==1.0: breaks the Pi" in queue, queue
    status = json.loads(piwheels(env, "status", "--json").stdout)
    assert status["skipped"] == [{"project": "pure-ok", "version": "1.0", "reason": "breaks the Pi"}]
    assert "breaks the Pi" in piwheels(env, "status").stdout
    added = piwheels(env, "add", "pure-ok==1.0")
    assert "is skipped (breaks the Pi)" in added.stderr and "pure-ok: 1.0" not in added.stdout, added
    piwheels(env, "unskip", "pure-ok==1.0")
    assert json.loads(piwheels(env, "status", "--json").stdout)["skipped"] == []
    again = piwheels(env, "unskip", "pure-ok==1.0", check=False)
    assert again.returncode == 2 and "not skipped" in again.stderr, again


def test_rebuild_takes_what_was_tried_unless_all_versions(env: dict[str, str]) -> None:
    piwheels(env, "add", "pure-ok")
    nothing = piwheels(env, "rebuild", "pure-ok", check=False)
    assert nothing.returncode == 2 and "--all-versions" in nothing.stderr, nothing
    _built(env, "1.0")
    one = piwheels(env, "rebuild", "pure-ok").stdout
    assert "pure-ok: 1.0 queued" in one, one
    every = piwheels(env, "rebuild", "pure-ok", "--all-versions").stdout
    assert "1.1, 1.0, 0.9" in every or ("0.9" in every and "1.1" in every), every
    bad = piwheels(env, "rebuild", "pure-ok", "--abi", "cp27-cp27mu-nothing", check=False)
    assert bad.returncode == 2 and "not an ABI" in bad.stderr, bad
    piwheels(env, "skip", "pure-ok==1.0", "--reason", "no")
    _built(env, "1.0")
    skipped = piwheels(env, "rebuild", "pure-ok==1.0", check=False)
    assert skipped.returncode == 2 and "is skipped (no)" in skipped.stderr, skipped


def test_queue_says_when_it_cuts(env: dict[str, str]) -> None:
    piwheels(env, "add", "pure-ok")
    cut = piwheels(env, "queue", "--limit", "1").stdout
    assert "only the first 1 shown" in cut, cut
    everything = piwheels(env, "queue", "--all").stdout
    assert "only the first" not in everything and everything.count("pure-ok") >= 3, everything


def test_status_says_what_it_counts(env: dict[str, str]) -> None:
    piwheels(env, "add", "pure-ok==1.0")
    text = piwheels(env, "status").stdout
    assert "asked for by NAME==VERSION" in text and "watched (every version)" in text, text
    assert json.loads(piwheels(env, "status", "--json").stdout)["requested"] == 1


def test_no_database_is_created_outside_init(tmp_path: Path) -> None:
    env = clean_env()
    for args in (["status"], ["queue"], ["publish"]):
        proc = subprocess.run([str(PIWHEELS), *args], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert proc.returncode == 2, (args, proc.returncode, proc.stderr)
        assert "run 'piwheels-ctl init'" in proc.stderr and str(tmp_path) in proc.stderr, proc.stderr
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())


def test_builders_check_without_builders(env: dict[str, str]) -> None:
    assert "no SSH builders to check" in piwheels(env, "builders", "check").stdout


def test_exit_codes(env: dict[str, str]) -> None:
    assert piwheels(env, "--version").returncode == 0
    assert piwheels(env, "no-such-command", check=False).returncode == 2
    assert piwheels(env, "add", "not a name!", check=False).returncode == 2
    assert piwheels(env, "audit", check=False).returncode in (0, 1)


def test_serve_speaks_once_bound(env: dict[str, str]) -> None:
    piwheels(env, "publish")
    proc = subprocess.Popen(
        [str(PIWHEELS), "serve", "--port", "0"], env=env, stderr=subprocess.PIPE, text=True,
        stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "serving" in line and ":0/" not in line, line
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        with urllib.request.urlopen(url + "index.html", timeout=30) as response:
            assert response.status == 200
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
