"""``run --forever`` syncs, builds and publishes; SIGTERM ends it cleanly, nothing left claimed."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

from helpers import PIWHEELS, clean_env, piwheels


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
