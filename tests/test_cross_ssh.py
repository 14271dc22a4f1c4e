"""A cross builder in a farm, end to end over SSH: provisioned by the builder role, registered,
driven by the master's ``run``, every wheel it makes loaded on its target before it is served.

Two hosts, each an sshd on a loopback address of its own over an overlay of a cached root
(tests/arm_hosts.py: the cached roots stay as they are): an x86_64 bookworm host
(``cross_roots.cross_host_root``: the cross root with sshd) and an emulated bookworm armhf one
(``arm_roots``, qemu-user). ``playbooks/builders.yml`` converges both, the first with
``builder_cross: [armhf, arm64]``, which it changes nothing on the second time; the role
registers them.
The master's ``run`` cross-builds a C extension for armv7l and aarch64 on the x86_64 host (at
native speed, with uv, the farm's default frontend) and, in the same run, the armhf builder
loads the armv7l wheel (a check job) before any index lists it. pip in the armhf host installs
it from the published index and imports it. The aarch64 wheel, which no builder of its
architecture has loaded, is served nowhere.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from arm_hosts import CONFIG_DIR, ArmHost, keygen, start_arm_host, write_emulated_farm_config
from arm_roots import arm_root, why_no_arm_emulation
from cross_roots import cross_host_root
from helpers import play_recap, serving
from indexserver import IndexServer
from sdists import PACKAGES, make_sdist

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# This test's own loopback addresses: the cross builder, the emulated armhf builder.
ADDRESSES = {"cross1": "127.0.1.100", "armhf1": "127.0.1.101"}
NO_KNOWN_HOSTS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"  # a new host key each run
ARMV7L, AARCH64, X86_64 = (f"cp311-cp311-linux_{m}" for m in ("armv7l", "aarch64", "x86_64"))
WHEELS = {abi: f"c_ext-1.0-{abi}.whl" for abi in (ARMV7L, AARCH64, X86_64)}
# An emulated converge and a load check under qemu-user, on 2 cores shared with other sessions.
pytestmark = [
    pytest.mark.skipif(shutil.which("debootstrap") is None, reason="debootstrap is not installed"),
    pytest.mark.timeout(3600),
]


@dataclass
class Farm:
    base: Path
    hosts: dict[str, ArmHost]
    inventory: Path
    config: Path

    def playbook(self, *limit: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_FORCE_COLOR": "0",
               "ANSIBLE_LOCAL_TEMP": str(self.base / "ansible-tmp")}  # fmt: skip
        return subprocess.run(
            [str(BIN / "ansible-playbook"), "-i", str(self.inventory), "playbooks/builders.yml",
             *(["--limit", ",".join(limit)] if limit else [])],
            cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=3600,
        )  # fmt: skip

    def controller(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "piwheels-ctl"), "--config", str(self.config), *args],
            capture_output=True, text=True, check=False, timeout=3600,
        )  # fmt: skip

    def db(self, query: str) -> set[tuple[object, ...]]:
        with contextlib.closing(sqlite3.connect(self.base / "data" / "piwheels.db")) as db:
            return set(db.execute(query).fetchall())


def _builder(host: ArmHost, config: Path, controller_key: Path, **settings: object) -> dict[str, object]:
    return {
        "ansible_host": host.address,
        "ansible_port": host.port,
        "ansible_ssh_private_key_file": str(host.key_file),
        "ansible_ssh_common_args": NO_KNOWN_HOSTS,
        "ansible_python_interpreter": "/usr/bin/python3",
        "builder_host_key_file": f"{CONFIG_DIR}/host_key.pub",
        "builder_slots": 1,
        "builder_controller": f"{BIN}/piwheels-ctl --config {config}",
        "builder_controller_key": str(controller_key),
        "builder_controller_user": "root",
        **settings,
    }


@pytest.fixture(scope="module")
def farm(build_deps: Path) -> Iterator[Farm]:
    problem = why_no_arm_emulation("armhf")
    if problem is not None:
        pytest.skip(problem)
    roots = {"cross1": cross_host_root(), "armhf1": arm_root("bookworm", "armhf")}
    base = Path(tempfile.mkdtemp(prefix="piwheels-cross-ssh-", dir="/var/tmp"))
    base.chmod(0o755)
    upstream = base / "upstream"
    upstream.mkdir()
    for wheel in build_deps.glob("*.whl"):
        shutil.copy(wheel, upstream)
    make_sdist(PACKAGES / "c-ext", upstream)
    hosts: dict[str, ArmHost] = {}
    try:
        for name, root in roots.items():
            (base / name).mkdir()
            hosts[name] = start_arm_host(base / name, root, ADDRESSES[name])
        with IndexServer(upstream) as index:
            config = write_emulated_farm_config(base, index.url)
            controller_key = base / "controller_key"
            keygen(controller_key, "controller")
            builders = {
                # Only zlib1g-dev of the role's usual build dependencies, in each target's multiarch.
                "cross1": _builder(
                    hosts["cross1"],
                    config,
                    controller_key,
                    builder_build_deps=["zlib1g-dev"],
                    builder_cross=["armhf", "arm64"],
                ),
                "armhf1": _builder(
                    hosts["armhf1"],
                    config,
                    controller_key,
                    builder_build_deps=["zlib1g-dev"],
                    builder_sudo_agent=True,
                ),
            }
            inventory = base / "inventory.yml"
            inventory.write_text(yaml.safe_dump({"all": {
                "vars": {"ansible_user": "root", "ansible_become_method": "su"},
                "children": {
                    "master": {"hosts": {"controller": {
                        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                    }}},
                    "builders": {"hosts": builders},
                },
            }}))  # fmt: skip
            made = Farm(base, hosts, inventory, config)
            assert made.controller("init").returncode == 0
            yield made
    finally:
        for host in hosts.values():
            host.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_a_cross_builder_converges_builds_for_arm_and_serves_only_what_its_target_loaded(farm: Farm) -> None:
    started = time.monotonic()
    first = farm.playbook()
    assert first.returncode == 0, first.stdout[-8000:] + first.stderr[-2000:]
    # Again, the cross builder only (the emulated builder's second converge is the ARM tier's test).
    second = farm.playbook("cross1")
    assert second.returncode == 0, second.stdout[-8000:]
    assert play_recap(second.stdout)["cross1"]["changed"] == 0, second.stdout[-8000:]
    converged = time.monotonic()

    # Registered by the role: the cross builder's own ABI and its targets' with the cross mark.
    builders = {b["name"]: b for b in json.loads(farm.controller("builders", "list", "--json").stdout)}
    assert set(builders) == {"cross1", "armhf1"}, builders
    cross1 = builders["cross1"]
    assert cross1["abis"] == sorted([AARCH64, ARMV7L, X86_64]) and cross1["refused"] == {}, cross1
    assert cross1["cross"] == {ARMV7L: "armhf", AARCH64: "arm64"}, cross1
    assert cross1["os"]["arch"] == "amd64" and cross1["os"]["codename"] == "bookworm", cross1
    assert builders["armhf1"]["abis"] == [ARMV7L] and builders["armhf1"]["cross"] == {}, builders["armhf1"]

    # One run: the cross builder builds every pair (the x86_64 one natively), the armhf builder
    # loads the armv7l wheel before anything lists it.
    assert farm.controller("add", "c-ext").returncode == 0
    run = farm.controller("run")
    assert "built 3, failed 0" in run.stdout, run.stdout + run.stderr
    assert f"checked {WHEELS[ARMV7L]} on bookworm: passed" in run.stdout, run.stdout + run.stderr
    built = time.monotonic()
    builds = farm.db(
        "SELECT b.name, a.tag, d.cross, d.status FROM builds d JOIN builders b ON b.id = d.builder_id "
        "JOIN abis a ON a.id = d.abi_id"
    )
    assert builds == {
        ("cross1", ARMV7L, "armhf", "success"),
        ("cross1", AARCH64, "arm64", "success"),
        ("cross1", X86_64, None, "success"),
    }, builds
    checks = farm.db(
        "SELECT f.filename, c.release, c.status, b.name FROM release_checks c "
        "JOIN files f ON f.id = c.file_id JOIN builders b ON b.id = c.builder_id"
    )
    assert checks == {(WHEELS[ARMV7L], "bookworm", "passed", "armhf1")}, checks
    # The farm's default frontend ran the cross builds: uv, the builder's own (x86_64) build.
    logs = {}
    for path in (farm.base / "data" / "logs").rglob("*.gz"):
        text = gzip.decompress(path.read_bytes()).decode(errors="replace")
        logs[text.split("(", 1)[1].split(")", 1)[0]] = text
    for abi in (ARMV7L, AARCH64):
        command = " ".join(
            logs[abi].split("command:", 1)[1].split("-----", 1)[0].replace("\\\n", " ").split()
        )
        assert "x86_64/uv-" in command and "/scripts/uv build --wheel" in command, (
            f"the {abi} build ran {command}"
        )
    status = farm.controller("status")
    assert "cross" in status.stdout, status.stdout

    # Published: the armv7l wheel (loaded on armhf) and the x86_64 one; the aarch64 wheel waits
    # for a builder of its architecture to load it and is listed nowhere.
    assert farm.controller("publish").returncode == 0
    www = farm.base / "data" / "www"
    listing = (www / "simple" / "c-ext" / "index.html").read_text()
    assert WHEELS[ARMV7L] in listing and WHEELS[X86_64] in listing, listing
    assert WHEELS[AARCH64] not in listing, f"served before any arm64 builder loaded it:\n{listing}"

    # pip in the armhf host installs the cross-built wheel from the index and imports it.
    with serving(www) as url:
        installed = farm.hosts["armhf1"].ssh(
            "export PIP_CONFIG_FILE=/dev/null && python3.11 -m venv /tmp/v311 && /tmp/v311/bin/pip install "
            f"--no-cache-dir --only-binary :all: --index-url {url}/simple/ c-ext && "
            "/tmp/v311/bin/python -c 'import c_ext, sysconfig; print(c_ext.__file__)' && "
            "cat /tmp/v311/lib/python3.11/site-packages/c_ext-1.0.dist-info/WHEEL",
            timeout=1800,
        )
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    assert f"Tag: {ARMV7L}" in installed.stdout, installed.stdout
    done = time.monotonic()
    print(
        f"converge twice {converged - started:.0f}s, run {built - converged:.0f}s, "
        f"install {done - built:.0f}s"
    )
