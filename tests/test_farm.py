"""A farm of builders over SSH, for real: sshd on loopback addresses, rsync, and its faults.

Every fault test ends with ``audit`` finding no disagreement and every job built exactly once
or still pending.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from piwheels_ctl.db.engine import Database
from piwheels_ctl.db.models import Build, Project, Version

from helpers import PIWHEELS, clean_env, debian_venv, piwheels
from indexserver import IndexServer
from sshd import SshHost, ssh_hosts

pytestmark = pytest.mark.build

SYSTEM_PYTHON = "/usr/bin/python3"
ADDRESSES = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]


@pytest.fixture(scope="module")
def hosts() -> Iterator[list[SshHost]]:
    with ssh_hosts(
        "piwheels-hosts-", [(address, f"pwfarm{n}") for n, address in enumerate(ADDRESSES, 1)]
    ) as started:
        yield started


@pytest.fixture(scope="module")
def upstream(
    tmp_path_factory: pytest.TempPathFactory, fixture_sdists: dict[str, Path], build_deps: Path
) -> Iterator[IndexServer]:
    folder = tmp_path_factory.mktemp("farm-upstream")
    for sdist in fixture_sdists.values():
        shutil.copy(sdist, folder)
    for wheel in build_deps.glob("*.whl"):
        shutil.copy(wheel, folder)
    with IndexServer(folder) as index:
        yield index


@dataclass
class Controller:
    env: dict[str, str]
    data: Path

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return piwheels(self.env, *args, check=check)

    def builds(self, name: str) -> list[tuple[str, str | None]]:
        """(status, builder) of every build of ``name``."""
        db = Database(f"sqlite:///{self.data / 'piwheels.db'}")
        try:
            with db.session() as session:
                rows = session.scalars(
                    select(Build).join(Build.version).join(Version.project).where(Project.name == name)
                ).all()
                return [(b.status.value, b.builder.name if b.builder else None) for b in rows]
        finally:
            db.dispose()

    def assert_consistent(self) -> None:
        assert "no disagreement" in self.cli("audit", "--deep").stdout


def _register(
    controller: Controller, host: SshHost, name: str, python: str = SYSTEM_PYTHON, *extra: str
) -> str:
    return controller.cli(
        "builders", "add", name, "--host", host.address, "--port", str(host.port), "--user", host.user,
        "--key", str(host.key_file), "--python", python, "--slots", "2", "--trust-host-key", *extra,
    ).stdout  # fmt: skip


@pytest.fixture
def controller(tmp_path: Path, upstream: IndexServer, hosts: list[SshHost]) -> Controller:
    data = tmp_path / "data"
    env = clean_env(
        PIWHEELS_DATA_DIR=str(data),
        PIWHEELS_UPSTREAM=upstream.url,
        PIWHEELS_LOCAL_BUILDER="false",
        PIWHEELS_BUILD_TIMEOUT="60",
        PIWHEELS_CONNECT_TIMEOUT="5",
        PIWHEELS_COMMAND_TIMEOUT="30",
        PIWHEELS_MIN_FREE_MB="50",
    )
    controller = Controller(env, data)
    controller.cli("init")
    for n, host in enumerate(hosts, 1):
        host.start()  # a test before may have stopped it
        assert "added" in _register(controller, host, f"b{n}")
    return controller


def test_a_batch_is_built_across_three_builders_and_installs(controller: Controller, tmp_path: Path) -> None:
    listing = json.loads(controller.cli("builders", "list", "--json").stdout)
    assert [b["name"] for b in listing] == ["b1", "b2", "b3"]
    assert [b["abis"] for b in listing] == [["cp311-cp311-linux_x86_64"]] * 3, listing
    controller.cli("add", "pure-ok", "c-ext", "abi3-ext", "writes-home", "fails-header", "slow-ok")
    out = controller.cli("run").stdout
    assert "built 5, failed 1, remaining 0" in out
    used = {builder for name in ("pure-ok", "c-ext", "abi3-ext", "writes-home", "fails-header", "slow-ok")
            for _status, builder in controller.builds(name)}  # fmt: skip
    assert len(used) >= 2  # the batch was spread over the farm
    controller.cli("publish")
    controller.assert_consistent()
    venv = tmp_path / "venv"
    debian_venv(venv)
    www = controller.data / "www" / "simple"
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--no-index", "--find-links", str(www / "c-ext"), "c-ext"],
        check=True,
        capture_output=True,
        env=clean_env(PIP_CONFIG_FILE="/dev/null"),
    )
    subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import c_ext; assert c_ext.add(2, 2) == 4"], check=True
    )


def test_unknown_host_key_is_refused_without_trust(controller: Controller, hosts: list[SshHost]) -> None:
    host = hosts[0]
    proc = controller.cli(
        "builders", "add", "stranger", "--host", host.address, "--port", str(host.port), "--user", host.user,
        "--key", str(host.key_file), "--python", SYSTEM_PYTHON, check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "host key unknown" in proc.stderr and "--trust-host-key" in proc.stderr


def test_builder_with_changed_host_key_is_refused(
    controller: Controller, hosts: list[SshHost], tmp_path: Path
) -> None:
    host = hosts[1]
    host.new_host_key()
    try:
        out = controller.cli("builders", "check", "b2").stdout
        assert "b2: unreachable" in out
        assert "host key" in out.lower()
        controller.cli("add", "pure-ok")
        run = controller.cli("run")
        assert "built 1" in run.stdout
        builds = controller.builds("pure-ok")
        assert [b for b in builds if b[1] == "b2"] == [], builds
    finally:
        host.restore_host_key()
    controller.assert_consistent()


def _wait_for_building(controller: Controller, timeout: float = 60) -> list[tuple[str, str | None]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        building = [b for b in controller.builds("slow-ok") if b[0] == "building"]
        if building:
            return building
        time.sleep(0.2)
    raise AssertionError("no build started")


def test_builder_killed_mid_build_hands_the_job_to_another(
    controller: Controller, hosts: list[SshHost]
) -> None:
    controller.cli("add", "slow-ok")
    run = subprocess.Popen(
        [str(PIWHEELS), "run"], env=controller.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        ((_status, builder),) = _wait_for_building(controller)
        victim = hosts[int(builder[1:]) - 1]  # type: ignore[index]
        time.sleep(1)
        victim.stop()  # sshd and every session of its user: the build's connection drops
        out, err = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 0, err
    builds = controller.builds("slow-ok")
    assert [s for s, _b in builds] == ["success"], builds
    assert builds[0][1] != builder
    assert "handed back" in out
    controller.assert_consistent()


def test_controller_killed_mid_batch_finishes_on_restart(controller: Controller) -> None:
    controller.cli("add", "slow-ok", "pure-ok", "c-ext")
    run = subprocess.Popen([str(PIWHEELS), "run"], env=controller.env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)  # fmt: skip
    _wait_for_building(controller)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    # Another controller on this host sees the dead owner and takes the jobs back.
    out = controller.cli("run").stdout
    assert "remaining 0" in out
    for name in ("slow-ok", "pure-ok", "c-ext"):
        statuses = [s for s, _b in controller.builds(name)]
        assert statuses == ["success"], (name, statuses)
    controller.cli("publish")
    controller.assert_consistent()


def _lying_python(host: SshHost, name: str, script: str) -> str:
    """An interpreter wrapper on the builder that runs the agent, then lies about its result."""
    path = host.home / name
    host.write_file(path, script, mode=0o755)
    return str(path)


CORRUPT = f"""#!/bin/sh
# Runs the agent, then flips bytes in every wheel of the outbox before the controller fetches it.
if [ "$2" = "build" ]; then
    out=$({SYSTEM_PYTHON} "$@")
    for whl in $(find "$HOME/piwheels/outbox" -name '*.whl'); do
        printf 'garbage' | dd of="$whl" bs=1 seek=100 conv=notrunc 2>/dev/null
    done
    echo "$out"
else
    exec {SYSTEM_PYTHON} "$@"
fi
"""

ESCAPE = f"""#!/bin/sh
# Runs the agent, then claims a file outside its outbox.
if [ "$2" = "build" ]; then
    {SYSTEM_PYTHON} "$@" | sed -e 's/"name": "[^"]*"/"name": "..\\/..\\/..\\/etc\\/passwd"/'
else
    exec {SYSTEM_PYTHON} "$@"
fi
"""

MALFORMED = f"""#!/bin/sh
# Runs the agent, then answers a wheel's size with a word.
if [ "$2" = "build" ]; then
    {SYSTEM_PYTHON} "$@" | sed -e 's/"size": [0-9]*/"size": "big"/'
else
    exec {SYSTEM_PYTHON} "$@"
fi
"""


@pytest.mark.parametrize(
    "script", [CORRUPT, ESCAPE, MALFORMED], ids=["corrupted-wheel", "path-escape", "malformed-answer"]
)
def test_lying_builder_is_rejected_and_the_job_built_elsewhere(
    controller: Controller, hosts: list[SshHost], script: str
) -> None:
    controller.cli("builders", "remove", "b2")
    controller.cli("builders", "remove", "b3")
    liar = _lying_python(hosts[0], "liar.sh", script)
    controller.cli("builders", "remove", "b1")
    # It lies only about its jobs' wheels: registered without the probe's test build, which a
    # liar this crude would fail (and is refused at `builders add`, as it should be).
    _register(controller, hosts[0], "liar", liar, "--no-build-check")
    controller.cli("add", "pure-ok")
    first = controller.cli("run")
    assert "handed back" in first.stdout
    assert controller.builds("pure-ok") == []  # nothing recorded from the liar
    incoming = controller.data / "incoming"
    assert not (controller.data / "etc").exists() and not incoming.with_name("etc").exists()
    _register(controller, hosts[1], "honest")
    second = controller.cli("run")
    assert "built 1" in second.stdout
    assert controller.builds("pure-ok") == [("success", "honest")]
    controller.assert_consistent()


def test_hanging_build_is_killed_at_the_time_limit(controller: Controller) -> None:
    env = {**controller.env, "PIWHEELS_BUILD_TIMEOUT": "5"}
    controller.cli("add", "hangs")
    piwheels(env, "run")
    builds = controller.builds("hangs")
    assert [s for s, _b in builds] == ["failed"]
    assert "timeout" in controller.cli("logs", "hangs", "1.0").stdout
    controller.assert_consistent()


def test_builder_with_full_disk_is_reported_and_the_job_retried(
    controller: Controller, hosts: list[SshHost]
) -> None:
    full = hosts[2]
    work = full.home / "piwheels" / "work"
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(work)], check=True)
    try:
        controller.cli("builders", "remove", "b1")
        controller.cli("builders", "remove", "b2")
        controller.cli("add", "pure-ok")
        first = controller.cli("run")
        assert "disk full" in first.stderr
        assert controller.builds("pure-ok") == []
        _register(controller, hosts[0], "roomy")
        second = controller.cli("run")
        assert "built 1" in second.stdout
        assert controller.builds("pure-ok") == [("success", "roomy")]
    finally:
        subprocess.run(["umount", str(work)], check=True)
    controller.assert_consistent()
