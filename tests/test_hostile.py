"""Hostile sdists built for real by the whole farm, on the local builder and on an SSH builder.

Each hostile project is a real sdist whose setup.py attacks while pip builds it: it reads the
farm's database and keys, overwrites another project's published wheel, leaves daemons, forks
without end, calls the controller's own services, lies in its log, floods it, and ships a wheel
for another platform. Afterwards the honest project is built once, installs with pip, its bytes
are untouched, and ``audit --deep`` finds no disagreement.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from piwheels_ctl.db.engine import Database
from piwheels_ctl.db.models import Build, Project, Version

from helpers import PIWHEELS, clean_env, piwheels, running, serving, wait_gone
from indexserver import IndexServer
from sdists import make_sdist, pip_env, setuptools_project
from sshd import SshHost, start_ssh_host

pytestmark = pytest.mark.build

TOKEN = "1000.3719"  # the sleep of the daemon a hostile build leaves behind
SSH_ADDRESS = "127.0.1.2"

SETUP_HEAD = """\
import json, os, socket, subprocess, sys, time
from setuptools import setup
ATTACK = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "attack.json")))
"""

ATTACKS = {
    # Reads the farm's secrets and overwrites the honest project's published wheel and the database.
    "thief": """
        for path in ATTACK["read"]:
            try:
                open(path, "rb").read(1)
                print("STOLE " + path)
            except OSError as exc:
                print("DENIED " + path + ": " + exc.strerror)
        for path in ATTACK["write"]:
            try:
                open(path, "r+b").write(b"trojan")
                print("OVERWROTE " + path)
            except OSError as exc:
                print("DENIED " + path + ": " + exc.strerror)
        sys.exit("the thief fails, so that pip shows what it printed")
        """,
    # Leaves a double-forked daemon that ignores SIGTERM, then builds fine.
    "daemon": f"""
        subprocess.Popen(["setsid", "sh", "-c", "trap '' TERM HUP; sleep {TOKEN} & sleep {TOKEN}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        """,
    # Forks without end.
    "bomb": """
        if "egg_info" not in sys.argv and "dist_info" not in sys.argv:
            while True:
                try:
                    if os.fork() == 0:
                        time.sleep(60)
                        os._exit(0)
                except OSError:
                    time.sleep(0.01)
        """,
    # Calls a service on the controller's machine, then gives up.
    "netprobe": """
        import urllib.request
        try:
            urllib.request.urlopen(ATTACK["url"], timeout=10).read()
            print("REACHED " + ATTACK["url"])
        except Exception as exc:
            print("UNREACHABLE", exc)
        sys.exit("cannot build without " + ATTACK["url"])
        """,
    # Fails and says the disk is full, hoping to be taken for the builder's fault.
    "liar": """
        sys.exit("OSError: [Errno 28] No space left on device")
        """,
    # Floods its log.
    "flood": """
        if "egg_info" not in sys.argv and "dist_info" not in sys.argv:
            for _ in range(30000):
                sys.stdout.write("x" * 1000 + "\\n")
            sys.exit("flooded")
        """,
}


def _project(root: Path, name: str, setup_body: str, attack: dict[str, object], setup_cfg: str = "") -> Path:
    files = {
        f"{name}.py": "VALUE = 42\n",
        "setup.py": SETUP_HEAD + textwrap.dedent(setup_body) + "\nsetup()\n",
        "attack.json": json.dumps(attack),
        "MANIFEST.in": "include attack.json\n",
    }
    if setup_cfg:
        files["setup.cfg"] = setup_cfg
    return setuptools_project(root, name, files, tables=f"\n[tool.setuptools]\npy-modules = ['{name}']\n")


@pytest.fixture(scope="module")
def ssh_host() -> Iterator[SshHost]:
    root = Path(tempfile.mkdtemp(prefix="piwheels-hostile-"))
    host = start_ssh_host(root, SSH_ADDRESS, "pwhostile")
    try:
        yield host
    finally:
        host.stop()
        shutil.rmtree(root, ignore_errors=True)


def _builds(data: Path) -> dict[str, Build]:
    db = Database(f"sqlite:///{data / 'piwheels.db'}")
    try:
        with db.session() as session:
            rows = session.execute(
                select(Project.name, Build)
                .join(Version, Version.project_id == Project.id)
                .join(Build, Build.version_id == Version.id)
                .where(Build.superseded.is_(False))
            ).all()
            return {name: build for name, build in rows}
    finally:
        db.dispose()


def _stored_log(data: Path, build: Build) -> str:
    assert build.log_path, f"build {build.id} has no log"
    return gzip.decompress((data / "logs" / build.log_path).read_bytes()).decode(errors="replace")


@pytest.mark.parametrize("builder", ["local", "ssh"])
def test_hostile_builds_cannot_hurt_the_farm(
    builder: str, tmp_path: Path, build_deps: Path, request: pytest.FixtureRequest
) -> None:
    data = tmp_path / "data"
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    for wheel in build_deps.glob("*.whl"):
        shutil.copy(wheel, upstream)
    sources = tmp_path / "sources"
    victim_wheel = data / "www" / "simple" / "victim" / "victim-1.0-py3-none-any.whl"
    listener = socket.create_server(("127.0.0.1", 0))  # a service of the controller's machine
    listener_port = listener.getsockname()[1]
    secret_url = f"http://127.0.0.1:{listener_port}/secret"
    attack = {
        "read": [str(data / "piwheels.db"), str(data / "known_hosts"), str(victim_wheel), "/root/.bashrc"],
        "write": [str(victim_wheel), str(data / "piwheels.db")],
        "url": secret_url,
    }
    make_sdist(_project(sources, "victim", "", {}), upstream)
    for name, body in ATTACKS.items():
        make_sdist(_project(sources, name, body, attack), upstream)
    foreign_cfg = "[bdist_wheel]\nplat_name = win_amd64\n"
    make_sdist(_project(sources, "foreign", "", {}, setup_cfg=foreign_cfg), upstream)
    tampered = make_sdist(_project(sources, "tampered", "", {}), upstream)

    with IndexServer(upstream) as index:
        env = clean_env(
            PIWHEELS_DATA_DIR=str(data),
            PIWHEELS_UPSTREAM=index.url,
            PIWHEELS_PYTHONS=sys.executable,
            PIWHEELS_SLOTS="2",
            PIWHEELS_BUILD_TIMEOUT="300",
            PIWHEELS_BUILD_MAX_PROCS="64",
            PIWHEELS_LOCAL_BUILDER="true" if builder == "local" else "false",
        )
        piwheels(env, "init")
        if builder == "ssh":
            host: SshHost = request.getfixturevalue("ssh_host")
            piwheels(
                env, "builders", "add", "pi", "--host", host.address, "--port", str(host.port),
                "--user", host.user, "--key", str(host.key_file), "--python", "/usr/bin/python3",
                "--slots", "2", "--trust-host-key",
            )  # fmt: skip
            listing = json.loads(piwheels(env, "builders", "list", "--json").stdout)
            assert listing[0]["sandbox"].startswith("bubblewrap namespaces"), listing
        piwheels(env, "add", "victim")
        piwheels(env, "run")
        if builder == "local":  # the controller runs as root here: each build gets a uid of its own
            listing = json.loads(piwheels(env, "builders", "list", "--json").stdout)
            assert listing[0]["sandbox"] == "bubblewrap namespaces (a uid of its own)", listing
        piwheels(env, "publish")
        assert victim_wheel.exists()
        victim_sha = hashlib.sha256(victim_wheel.read_bytes()).hexdigest()

        piwheels(env, "add", *ATTACKS, "foreign", "tampered")
        # The upstream serves other bytes than the hash its page gave when it was read.
        tampered.write_bytes(tampered.read_bytes() + b"\0")
        run = piwheels(env, "run")
        piwheels(env, "publish")
    listener.close()

    builds = _builds(data)
    report = {name: (b.status.value, b.failure_reason, b.failure_detail) for name, b in builds.items()}
    assert set(report) == {"victim", *ATTACKS, "foreign", "tampered"}, report
    # No hostile build became the builder's fault.
    assert "handed back" not in run.stdout, (run.stdout, report)
    assert report["victim"][0] == "success"
    assert hashlib.sha256(victim_wheel.read_bytes()).hexdigest() == victim_sha, "the victim's wheel changed"

    thief_log = _stored_log(data, builds["thief"])
    assert report["thief"][:2] == ("failed", "other"), (report["thief"], thief_log[-2000:])
    assert "STOLE" not in thief_log and "OVERWROTE" not in thief_log, thief_log
    assert thief_log.count("DENIED") == 6, thief_log

    assert report["daemon"][0] == "success", report["daemon"]
    assert wait_gone(TOKEN) == [], "a daemon outlived its build"

    assert report["bomb"][:2] == ("failed", "too-many-processes"), report["bomb"]
    assert report["netprobe"][:2] == ("failed", "needs-network"), report["netprobe"]
    assert f"127.0.0.1:{listener_port}: refused" in (report["netprobe"][2] or ""), report["netprobe"]
    assert "REACHED" not in _stored_log(data, builds["netprobe"])
    assert report["liar"][:2] == ("failed", "other"), report["liar"]
    assert report["flood"][0] == "failed"
    assert len(_stored_log(data, builds["flood"])) < 1100 * 1024, "the flood's log was not cut"
    assert report["foreign"][:2] == ("failed", "invalid-wheel"), report["foreign"]
    assert "win_amd64" in (report["foreign"][2] or ""), report["foreign"]

    assert report["tampered"][:2] == ("failed", "download-failed"), report["tampered"]
    assert "sha256" in (report["tampered"][2] or ""), report["tampered"]

    assert "no disagreement" in piwheels(env, "audit", "--deep").stdout
    with serving(data / "www") as url:
        target = tmp_path / "installed"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target),
             "--index-url", f"{url}/simple/", "victim"],
            env=pip_env(), check=True, capture_output=True, timeout=300,
        )  # fmt: skip
    assert (target / "victim.py").read_text() == "VALUE = 42\n"


def test_a_killed_controller_leaves_no_build_behind(tmp_path: Path, build_deps: Path) -> None:
    """SIGKILL of `run` mid-build: the build's processes die with it, the next `run` carries on."""
    token = "1000.4271"
    data, upstream = tmp_path / "data", tmp_path / "upstream"
    upstream.mkdir()
    for wheel in build_deps.glob("*.whl"):
        shutil.copy(wheel, upstream)
    sleeper = f"""
        if "egg_info" not in sys.argv and "dist_info" not in sys.argv:
            subprocess.Popen(["setsid", "sleep", "{token}"])
            subprocess.call(["sleep", "{token}"])
        """
    make_sdist(_project(tmp_path / "sources", "sleeper", sleeper, {}), upstream)
    with IndexServer(upstream) as index:
        env = clean_env(
            PIWHEELS_DATA_DIR=str(data), PIWHEELS_UPSTREAM=index.url, PIWHEELS_PYTHONS=sys.executable,
            PIWHEELS_SLOTS="1", PIWHEELS_BUILD_TIMEOUT="20",
        )  # fmt: skip
        piwheels(env, "init")
        piwheels(env, "add", "sleeper")
        controller = subprocess.Popen(
            [str(PIWHEELS), "run"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 300
            while not running(token):
                assert controller.poll() is None and time.monotonic() < deadline, "the build never started"
                time.sleep(0.1)
        finally:
            controller.kill()
            controller.wait()
        assert wait_gone(token) == [], "the build outlived its controller"
        # The next run takes the job back (its controller is gone) and ends it at the time limit.
        piwheels(env, "run")
    builds = _builds(data)
    assert (builds["sleeper"].status.value, builds["sleeper"].failure_reason) == ("failed", "timeout")
    assert wait_gone(token) == []
    assert list((data / "work" / "builds").glob("build-*")) == [], "a killed build's folder is left"
