"""``run --forever`` syncs, builds and publishes; SIGTERM ends it cleanly, nothing left claimed."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

from helpers import PIWHEELS, clean_env, piwheels
from indexserver import JSON_TYPE, IndexServer


def test_run_forever_builds_publishes_and_stops_on_sigterm(
    tmp_path: Path, fixture_sdists: dict[str, Path], build_deps: Path
) -> None:
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    for sdist in (fixture_sdists["pure-ok"], fixture_sdists["slow-ok"]):
        shutil.copy(sdist, upstream)
    for wheel in build_deps.glob("*.whl"):
        shutil.copy(wheel, upstream)
    env = clean_env(PIWHEELS_DATA_DIR=str(tmp_path / "data"), PIWHEELS_UPSTREAM=str(upstream),
                    PIWHEELS_SLOTS="1", PIWHEELS_SYNC_INTERVAL="1")  # fmt: skip
    piwheels(env, "init")
    piwheels(env, "add", "pure-ok")
    proc = subprocess.Popen([str(PIWHEELS), "run", "--forever"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    page = tmp_path / "data" / "www" / "simple" / "pure-ok" / "index.json"
    try:
        deadline = time.monotonic() + 300
        while not page.exists():  # pure-ok, the newer release, is built and published first
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "nothing was published"
            time.sleep(0.2)
        piwheels(env, "add", "slow-ok")
        while json.loads(piwheels(env, "status", "--json").stdout)["builds"]["building"] == 0:
            assert time.monotonic() < deadline, "slow-ok was not picked up"
            time.sleep(0.2)
        # slow-ok is being built: SIGTERM lets it finish and be recorded, then stops.
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    status = json.loads(piwheels(env, "status", "--json").stdout)
    assert status["builds"]["building"] == 0
    assert status["builds"]["success"] == 2
    assert "no disagreement" in piwheels(env, "audit").stdout


def test_run_forever_goes_on_building_when_a_sync_meets_a_hostile_upstream(
    tmp_path: Path, fixture_sdists: dict[str, Path], build_deps: Path
) -> None:
    """A page nested 100,000 deep and a project gone (404): each round reports them and builds on."""
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    shutil.copy(fixture_sdists["pure-ok"], upstream)
    for wheel in build_deps.glob("*.whl"):
        shutil.copy(wheel, upstream)
    (upstream / "gone-1.0.tar.gz").write_bytes(b"not built: skipped first")
    with IndexServer(upstream) as index:
        env = clean_env(PIWHEELS_DATA_DIR=str(tmp_path / "data"), PIWHEELS_UPSTREAM=index.url,
                        PIWHEELS_SLOTS="1", PIWHEELS_SYNC_INTERVAL="1")  # fmt: skip
        piwheels(env, "init")
        index.canned["/simple/evil/"] = (
            200,
            JSON_TYPE,
            b'{"meta": {"api-version": "1.1"}, "name": "evil", "files": []}',
        )
        piwheels(env, "add", "evil", "gone")
        piwheels(env, "skip", "gone", "--reason", "not an sdist")
        # From now on: evil's page is hostile, gone is gone. Only then does pure-ok arrive.
        index.canned["/simple/evil/"] = (200, JSON_TYPE, b"[" * 100_000 + b"]" * 100_000)
        (upstream / "gone-1.0.tar.gz").unlink()
        piwheels(env, "add", "pure-ok")
        stderr_path = tmp_path / "stderr.txt"
        with open(stderr_path, "w") as stderr:
            proc = subprocess.Popen([str(PIWHEELS), "run", "--forever"], env=env, stdout=subprocess.DEVNULL,
                                    stderr=stderr, text=True)  # fmt: skip
        page = tmp_path / "data" / "www" / "simple" / "pure-ok" / "index.json"
        evil = f"{index.url}evil/: not a project page we can read: nested too deep"
        gone = f"gone: the upstream {index.url} has no such project"
        try:
            deadline = time.monotonic() + 300
            while not page.exists() or stderr_path.read_text().count(evil) < 2:
                assert proc.poll() is None, f"run --forever ended:\n{stderr_path.read_text()}"
                assert time.monotonic() < deadline, f"nothing published:\n{stderr_path.read_text()}"
                time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    log = stderr_path.read_text()
    assert proc.returncode == 0, log
    assert gone in log
    assert "Traceback" not in log, log
    status = json.loads(piwheels(env, "status", "--json").stdout)
    assert status["builds"]["success"] == 1, status
