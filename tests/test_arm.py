"""The ARM tier: an emulated Raspberry-Pi-like builder, provisioned, registered, building for real.

A Debian bullseye armhf root (``arm_roots``: debootstrap --foreign, qemu-user through
binfmt_misc, cached outside the clone) runs its own sshd on a loopback address of its own, in
a mount namespace where the cached root is the lower layer of an overlay (the cache stays
clean). ``playbooks/builders.yml`` provisions it as an ARM builder would be, with this
machine's controller as the master; no namespaces can be made under qemu-user, so builds go
through the role's sudo rule to the root-owned agent, each as a uid of its own. The builder
then builds a C extension for cp27mu and cp39 as ``linux_armv7l`` wheels; they are published,
and pip inside the ARM host installs and imports them. A build forced to time out on 2.7 is
killed and recorded as a time-out. A bookworm armhf host (its own root and address) builds the
same extension for cp311, says what it is (debian bookworm, armhf, glibc 2.36), and in the same
run refuses an extension whose module does not load there (``import-failed``). With the farm's
``repair = "auditwheel"``, the bullseye builder's abi3 build of an extension linking libffi comes
out as ``manylinux_2_31_armv7l`` with libffi.so.7 inside (its 2.7 build stays ``linux_armv7l``):
pip installs and imports it in a clean bookworm armhf host, which has libffi.so.8 only, where the
same project's unrepaired wheel fails with the loader's "cannot open shared object file".

The arm64 tier: a Debian bookworm arm64 root (qemu-aarch64) on a loopback address of its own
joins the bullseye armhf tier's master. The role finds by itself that no namespaces can be made
there and sets up the sudo agent; the builder builds the extension as ``linux_aarch64``, which
pip inside the arm64 host installs and imports, and with repair on the libffi extension as
``manylinux_2_36_aarch64``. The two builders' ABIs keep their own queues,
coverage and page cells, and an upstream manylinux aarch64 wheel covers only the arm64 pair.

Everything ARM here runs emulated (slow: a few builds only, to keep CI within its time).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pypi_simple import PYPI_SIMPLE_ENDPOINT

from piwheels_ctl.config import Settings
from piwheels_ctl.farm import frontend

from arm_hosts import BUILDER_USER, CONFIG_DIR, ArmHost, start_arm_host, write_emulated_farm_config
from arm_hosts import keygen as _keygen
from arm_roots import arm64_root, armhf_root, why_no_arm_emulation
from helpers import free_port, play_recap, running, serving, wait_gone
from indexserver import IndexServer
from py2deps import download_py27_wheels
from sdists import PACKAGES, make_sdist, pip_env
from wheels import make_wheel

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PY2_PACKAGES = Path(__file__).parent / "packages-py2"
# This tier's own loopback addresses, one per emulated host.
# An emulated converge plus a build under qemu-user: the suite's 600 s cut the bookworm test at
# load 5, while its own commands are each allowed an hour.
pytestmark = pytest.mark.timeout(3600)
ADDRESSES = {"bullseye": "127.0.1.20", "bookworm": "127.0.1.22"}
CLEAN_ADDRESS = "127.0.1.93"  # a bookworm armhf host that only installs (no builder, no libffi.so.7)
HANG_TOKEN = "100000.2931"  # the sleep of hangs-py2 on 2.7
NO_KNOWN_HOSTS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"  # a new host key each run


def _requires_python(folder: Path) -> dict[str, str]:
    """filename -> Requires-Python of each wheel in ``folder``, for the index page (pip 20.3.4 on
    2.7 must see that the newer setuptools is not for it)."""
    found = {}
    for wheel in folder.glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            for line in archive.read(name).decode().splitlines():
                if line.startswith("Requires-Python:"):
                    found[wheel.name] = line.split(":", 1)[1].strip()
    return found


@dataclass
class Tier:
    base: Path
    host: ArmHost
    index: IndexServer
    inventory: Path
    config: Path
    links: Path

    def playbook(self, inventory: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_LOCAL_TEMP": str(self.base / "ansible-tmp"),
        }
        return subprocess.run(
            [str(BIN / "ansible-playbook"), "-i", str(inventory or self.inventory), "playbooks/builders.yml"],
            cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=3600,
        )  # fmt: skip

    def controller(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "piwheels-ctl"), "--config", str(self.config), *args],
            capture_output=True, text=True, check=False, timeout=3600, env={**os.environ, **env},
        )  # fmt: skip


@contextlib.contextmanager
def make_tier(release: str, build_deps: Path) -> Iterator[Tier]:
    """An emulated armhf ``release`` host, its index and a controller with an inventory for it."""
    problem = why_no_arm_emulation()
    if problem is not None:
        pytest.fail(f"the ARM tier cannot run here: {problem}", pytrace=False)
    root = armhf_root(release)
    base = Path(tempfile.mkdtemp(prefix=f"piwheels-arm-{release}-", dir="/var/tmp"))
    base.chmod(0o755)
    upstream = base / "upstream"
    upstream.mkdir()
    links = download_py27_wheels(base / "py27")
    for wheel in [*build_deps.glob("*.whl"), *links.glob("*.whl")]:
        shutil.copy(wheel, upstream)
    for project in ("zlib-ext", "hangs-py2", "undefined-symbol-ext", "ffi-abi3-ext"):
        make_sdist(PY2_PACKAGES / project, upstream)
    host = start_arm_host(base, root, ADDRESSES[release])
    try:
        with IndexServer(upstream) as index:
            index.requires_python.update(_requires_python(upstream))
            config = write_emulated_farm_config(base, index.url)
            controller_key = base / "controller_key"
            _keygen(controller_key, "controller")
            inventory = base / "inventory.yml"
            inventory.write_text(yaml.safe_dump({"all": {
                "vars": {"ansible_user": "root", "ansible_become_method": "su"},
                "children": {
                    "master": {"hosts": {"controller": {
                        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                    }}},
                    "builders": {"hosts": {"arm1": {
                        "ansible_host": ADDRESSES[release],
                        "ansible_port": host.port,
                        "ansible_ssh_private_key_file": str(host.key_file),
                        "ansible_ssh_common_args": NO_KNOWN_HOSTS,
                        "ansible_python_interpreter": "/usr/bin/python3",
                        "builder_build_deps": ["zlib1g-dev", "libffi-dev"],
                        "builder_host_key_file": f"{CONFIG_DIR}/host_key.pub",
                        "builder_slots": 1,
                        "builder_sudo_agent": True,
                        "builder_controller": f"{BIN}/piwheels-ctl --config {config}",
                        "builder_controller_key": str(controller_key),
                        "builder_controller_user": "root",
                    }}},
                },
            }}))  # fmt: skip
            tier = Tier(base, host, index, inventory, config, links)
            assert tier.controller("init").returncode == 0
            yield tier
    finally:
        host.stop()
        wait_gone(HANG_TOKEN)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def tier(build_deps: Path) -> Iterator[Tier]:
    with make_tier("bullseye", build_deps) as made:
        yield made


def test_the_emulated_arm_builder_converges_registers_builds_and_pip_installs_its_wheels(tier: Tier) -> None:
    started = time.monotonic()
    first = tier.playbook()
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-2000:]
    second = tier.playbook()
    assert second.returncode == 0, second.stdout[-6000:]
    assert play_recap(second.stdout)["arm1"]["changed"] == 0, second.stdout[-6000:]
    converged = time.monotonic()

    # Registered with its host key; both interpreters usable, through the role's sudo rule.
    listing = json.loads(tier.controller("builders", "list", "--json").stdout)
    assert [b["name"] for b in listing] == ["arm1"], listing
    arm1 = listing[0]
    assert arm1["abis"] == ["cp27-cp27mu-linux_armv7l", "cp39-cp39-linux_armv7l"], arm1
    assert arm1["sudo"] == "/var/lib/piwheels-agent" and arm1["refused"] == {}, arm1
    assert arm1["sandbox"].startswith("a uid of its own, no namespaces"), arm1

    # A C extension linking zlib, for both Pythons.
    assert tier.controller("add", "zlib-ext").returncode == 0
    run = tier.controller("run")
    assert "built 2, failed 0" in run.stdout, run.stdout + run.stderr
    built = time.monotonic()
    publish = tier.controller("publish")
    assert publish.returncode == 0, publish.stderr
    www = tier.base / "data" / "www"
    wheels = sorted(p.name for p in www.rglob("*.whl"))
    assert wheels == [
        "zlib_ext-1.0-cp27-cp27mu-linux_armv7l.whl",
        "zlib_ext-1.0-cp39-cp39-linux_armv7l.whl",
    ], wheels
    deps = json.loads(tier.controller("deps", "zlib-ext", "--json").stdout)
    assert {d["package"] for d in deps["packages"]} >= {"zlib1g"}, deps
    assert "sudo apt install zlib1g" in tier.controller("deps", "zlib-ext").stdout

    # pip inside the ARM host installs them from the published index and imports them.
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(www), str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/simple/"
        check = "import zlib_ext; assert zlib_ext.crc('hello') == 907060870, zlib_ext.crc('hello')"
        py39 = tier.host.ssh(
            "python3.9 -m venv /tmp/v39 && /tmp/v39/bin/pip install --no-cache-dir --only-binary :all: "
            f'--index-url {url} zlib-ext && /tmp/v39/bin/python -c "{check}"'
        )
        assert py39.returncode == 0, py39.stdout[-3000:] + py39.stderr[-3000:]
        pip = next(tier.links.glob("pip-20.3.4-*.whl"))
        tier.host.put(pip, f"/tmp/{pip.name}")
        py27 = tier.host.ssh(
            f"python2.7 /tmp/{pip.name}/pip install --no-cache-dir --only-binary :all: --target /tmp/t27 "
            f'--index-url {url} zlib-ext && PYTHONPATH=/tmp/t27 python2.7 -c "{check}"'
        )
        assert py27.returncode == 0, py27.stdout[-3000:] + py27.stderr[-3000:]
    finally:
        server.terminate()
        server.wait(timeout=30)
    installed = time.monotonic()
    took = (converged - started, built - converged, installed - built)
    print("converge {:.0f}s, builds {:.0f}s, installs {:.0f}s".format(*took))


def test_a_build_that_times_out_on_python_2_7_is_killed_and_recorded_as_a_time_out(tier: Tier) -> None:
    listing = json.loads(tier.controller("builders", "list", "--json").stdout)
    if not listing:  # this test alone: converge first
        assert tier.playbook().returncode == 0
    assert tier.controller("add", "hangs-py2").returncode == 0
    seen: list[str] = []
    done = threading.Event()

    def watch() -> None:  # the hanging build's sleep, seen while it runs
        while not done.is_set() and not seen:
            seen.extend(running(HANG_TOKEN))
            time.sleep(0.5)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        # No second chance here (tests/test_timeout_retry.py has it): it would double an emulated hang.
        run = tier.controller("run", PIWHEELS_BUILD_TIMEOUT="180", PIWHEELS_TIMEOUT_RETRY_FACTOR="0")
    finally:
        done.set()
        watcher.join()
    assert "failed 2" in run.stdout, run.stdout + run.stderr
    assert seen, "the 2.7 build never reached its hang: the time-out ended something else"
    failures = json.loads(tier.controller("failures", "hangs-py2", "--json", "--no-hints").stdout)
    reasons = {f["abi"]: f["reason"] for f in failures}
    assert reasons.get("cp27-cp27mu-linux_armv7l") == "timeout", failures
    assert reasons.get("cp39-cp39-linux_armv7l") != "timeout", failures
    assert wait_gone(HANG_TOKEN) == [], "the 2.7 build outlived its time limit"
    health = json.loads(tier.controller("builders", "list", "--json").stdout)[0]
    assert health["healthy"] is True, health


def test_a_bookworm_armhf_builder_builds_for_cp311(build_deps: Path) -> None:
    with make_tier("bookworm", build_deps) as bookworm:
        converge = bookworm.playbook()
        assert converge.returncode == 0, converge.stdout[-6000:] + converge.stderr[-2000:]
        listing = json.loads(bookworm.controller("builders", "list", "--json").stdout)
        assert listing[0]["abis"] == ["cp311-cp311-linux_armv7l"] and listing[0]["sudo"], listing
        # The builder says what it is: its userland (armhf), not this machine's kernel.
        said = {"id": "debian", "codename": "bookworm", "arch": "armhf", "machine": "armv7l", "glibc": "2.36"}
        assert listing[0]["os"] == said, listing
        # The same build run loads what it made: a module with an undefined symbol is refused.
        assert bookworm.controller("add", "zlib-ext", "undefined-symbol-ext").returncode == 0
        run = bookworm.controller("run")
        assert "built 1, failed 1" in run.stdout, run.stdout + run.stderr
        failures = json.loads(bookworm.controller("failures", "--json", "--no-hints").stdout)
        assert [(f["name"], f["reason"], f["detail"]) for f in failures] == [
            ("undefined-symbol-ext", "import-failed", "piwheels_no_such_function")
        ], failures
        assert "undefined symbol: piwheels_no_such_function" in failures[0]["evidence"], failures
        assert bookworm.controller("publish").returncode == 0
        www = bookworm.base / "data" / "www"
        assert sorted(p.name for p in www.rglob("*.whl")) == ["zlib_ext-1.0-cp311-cp311-linux_armv7l.whl"]
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(www), str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            check = "import zlib_ext; assert zlib_ext.crc('hello') == 907060870"
            pip = f"/tmp/v311/bin/pip install --no-cache-dir --only-binary :all: --index-url http://127.0.0.1:{port}/simple/"
            installed = bookworm.host.ssh(
                f'python3.11 -m venv /tmp/v311 && {pip} zlib-ext && /tmp/v311/bin/python -c "{check}"'
            )
            assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
        finally:
            server.terminate()
            server.wait(timeout=30)


def _add_repair_tools(tier: Tier, abi: str) -> None:
    """The repair's pinned tools for ``abi``'s machine in the tier's build index (fetched from
    PyPI once, as a farm's controller fetches them from its build index)."""
    settings = Settings(data_dir=tier.base / "repair-tools")
    for wheel in frontend.repair_tools(settings, abi, PYPI_SIMPLE_ENDPOINT, []):
        shutil.copy(wheel, tier.base / "upstream")


def _build_seconds(tier: Tier, project: str) -> str:
    """The builds of ``project`` in the order they ran: ABI and seconds (the repair's cost under
    emulation, side by side with the same build without it)."""
    with contextlib.closing(sqlite3.connect(tier.base / "data" / "piwheels.db")) as db:
        rows = db.execute(
            "SELECT a.tag, d.duration FROM builds d JOIN abis a ON a.id = d.abi_id JOIN versions v "
            "ON v.id = d.version_id JOIN projects p ON p.id = v.project_id WHERE p.name = ? ORDER BY d.id",
            (project,),
        ).fetchall()
    return ", ".join(f"{tag} {seconds or 0:.1f}s" for tag, seconds in rows)


def _wheels(tier: Tier, prefix: str) -> set[str]:
    return {p.name for p in (tier.base / "data" / "www").rglob(f"{prefix}-*.whl")}


def test_a_repaired_armv7l_wheel_imports_on_a_release_without_its_library(tier: Tier) -> None:
    """ffi-abi3-ext built with repair on the bullseye builder carries bullseye's libffi.so.7 and
    imports on bookworm armhf (libffi.so.8 only); the unrepaired wheel does not load there. Its
    2.7 build, repair on as well, stays linux_armv7l: the repair is not for Python 2.7."""
    if not json.loads(tier.controller("builders", "list", "--json").stdout):  # this test alone
        assert tier.playbook().returncode == 0
    started = time.monotonic()
    _add_repair_tools(tier, "cp39-cp39-linux_armv7l")
    assert tier.controller("add", "ffi-abi3-ext").returncode == 0
    run = tier.controller("run", PIWHEELS_REPAIR="auditwheel")
    assert "built 2, failed 0" in run.stdout, run.stdout + run.stderr
    repaired_at = time.monotonic()
    assert tier.controller("publish").returncode == 0
    repaired = "ffi_abi3_ext-1.0-cp38-abi3-manylinux_2_31_armv7l.whl"
    assert _wheels(tier, "ffi_abi3_ext") == {"ffi_abi3_ext-1.0-cp27-cp27mu-linux_armv7l.whl", repaired}, (
        _wheels(tier, "ffi_abi3_ext")
    )
    (path,) = (tier.base / "data" / "www").rglob(repaired)
    with zipfile.ZipFile(path) as archive:
        grafted = [n for n in archive.namelist() if n.startswith("ffi_abi3_ext.libs/libffi")]
    assert [n for n in grafted if ".so.7" in n], f"libffi.so.7 is not inside {repaired}: {grafted}"
    log = tier.controller("logs", "ffi-abi3-ext").stdout
    assert "[piwheels] repaired:" in log, log[-3000:]

    clean = start_arm_host(tier.base / "clean", armhf_root("bookworm"), CLEAN_ADDRESS)
    try:
        venv = "export PIP_CONFIG_FILE=/dev/null && python3.11 -m venv /tmp/v311 && /tmp/v311/bin/pip install"
        check = '/tmp/v311/bin/python -c "import ffi_abi3_ext; assert ffi_abi3_ext.call_add(2, 3) == 5"'
        with serving(tier.base / "data" / "www") as url:
            installed = clean.ssh(f"{venv} --no-cache-dir --only-binary :all: --index-url {url}/simple/ "
                                  f"ffi-abi3-ext && {check} && ls /usr/lib/arm-linux-gnueabihf")  # fmt: skip
        assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
        assert "libffi.so.8" in installed.stdout and "libffi.so.7" not in installed.stdout, installed.stdout
        installed_at = time.monotonic()

        # The same project's cp39 build without repair: its wheel needs libffi.so.7 from apt.
        assert tier.controller("rebuild", "ffi-abi3-ext", "--abi", "cp39-cp39-linux_armv7l").returncode == 0
        run = tier.controller("run", PIWHEELS_REPAIR="none")
        assert "built 1, failed 0" in run.stdout, run.stdout + run.stderr
        assert tier.controller("publish").returncode == 0
        plain = "ffi_abi3_ext-1.0-cp38-abi3-linux_armv7l.whl"
        found = list((tier.base / "data" / "www").rglob(plain))
        assert found, f"no unrepaired wheel published: {_wheels(tier, 'ffi_abi3_ext')}"
        clean.put(found[0], f"/tmp/{plain}")
        failed = clean.ssh(f"/tmp/v311/bin/pip install --no-index --force-reinstall /tmp/{plain} && {check}")
        assert failed.returncode != 0, f"the unrepaired wheel imported without libffi.so.7: {failed.stdout}"
        assert "libffi.so.7: cannot open shared object file" in failed.stderr, failed.stderr[-3000:]
    finally:
        clean.stop()
    print("ffi-abi3-ext builds (repair on, then cp39 off):", _build_seconds(tier, "ffi-abi3-ext"))
    took = (repaired_at - started, installed_at - repaired_at, time.monotonic() - installed_at)
    print(
        "builds with repair {:.0f}s, clean host and install {:.0f}s, plain build and install {:.0f}s".format(
            *took
        )
    )


# -- the arm64 tier: a bookworm arm64 builder on the bullseye armhf tier's master ------------------

ARM64_ADDRESS = "127.0.1.50"
ARMV7L_ABIS = {"cp27-cp27mu-linux_armv7l", "cp39-cp39-linux_armv7l"}
AARCH64_ABI = "cp311-cp311-linux_aarch64"


@dataclass
class Arm64:
    host: ArmHost
    inventory: Path
    host_key: str


@pytest.fixture(scope="module")
def arm64(tier: Tier) -> Iterator[Arm64]:
    """An emulated bookworm arm64 host beside the bullseye armhf one, for the same controller:
    its inventory leaves ``builder_sudo_agent`` to the role; the build index gets uv for aarch64."""
    problem = why_no_arm_emulation("arm64")
    if problem is not None:
        pytest.fail(f"the arm64 tier cannot run here: {problem}", pytrace=False)
    root = arm64_root("bookworm")
    base = tier.base / "arm64"
    base.mkdir()
    uv = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--only-binary", ":all:", "--no-deps", "--platform",
         "manylinux_2_17_aarch64", "--python-version", "3.11", "--dest", str(tier.base / "upstream"),
         "--index-url", PYPI_SIMPLE_ENDPOINT, f"uv=={frontend.UV_VERSION}"],
        env=pip_env(), capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert uv.returncode == 0, uv.stdout + uv.stderr
    host = start_arm_host(base, root, ARM64_ADDRESS)
    try:
        settings = yaml.safe_load(tier.inventory.read_text())
        arm1 = settings["all"]["children"]["builders"]["hosts"]["arm1"]
        arm64 = {key: value for key, value in arm1.items() if key != "builder_sudo_agent"}  # auto
        arm64.update(
            ansible_host=ARM64_ADDRESS,
            ansible_port=host.port,
            ansible_ssh_private_key_file=str(host.key_file),
        )
        settings["all"]["children"]["builders"]["hosts"] = {"arm64": arm64}
        inventory = base / "inventory.yml"
        inventory.write_text(yaml.safe_dump(settings))
        host_key = (base / "upper" / CONFIG_DIR.lstrip("/") / "host_key.pub").read_text().split()[:2]
        yield Arm64(host, inventory, " ".join(host_key))
    finally:
        host.stop()


def _db(tier: Tier, query: str) -> set[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(tier.base / "data" / "piwheels.db")) as db:
        return set(db.execute(query).fetchall())


def _cells(tier: Tier, project: str) -> dict[str, tuple[str, str | None]]:
    """ABI -> (state, file) of the project's only release on its published page."""
    page = json.loads((tier.base / "data" / "www" / "project" / project / "json").read_text())
    (release,) = page["releases"]
    return {abi: (cell["state"], cell["file"]) for abi, cell in release["cells"].items()}


def test_an_emulated_arm64_builder_provisions_itself_builds_for_aarch64_and_pip_installs_it(
    tier: Tier, arm64: Arm64
) -> None:
    if not json.loads(tier.controller("builders", "list", "--json").stdout):  # this test alone
        assert tier.playbook().returncode == 0
    assert tier.controller("add", "zlib-ext").returncode == 0
    first = tier.playbook(arm64.inventory)
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-2000:]
    second = tier.playbook(arm64.inventory)
    assert second.returncode == 0, second.stdout[-6000:]
    assert play_recap(second.stdout)["arm64"]["changed"] == 0, second.stdout[-6000:]

    # Registered by the role; no namespaces under qemu-user: the role found out and set up sudo.
    builders = {b["name"]: b for b in json.loads(tier.controller("builders", "list", "--json").stdout)}
    assert set(builders) == {"arm1", "arm64"}, builders
    assert builders["arm64"]["abis"] == [AARCH64_ABI], builders["arm64"]
    assert builders["arm64"]["sudo"] == "/var/lib/piwheels-agent", builders["arm64"]
    assert builders["arm64"]["sandbox"].startswith("a uid of its own, no namespaces"), builders["arm64"]

    # Without the sudo agent, `builders add` says which setting is missing.
    bare = tier.controller(
        "builders", "add", "arm64-bare", "--host", ARM64_ADDRESS, "--port", str(arm64.host.port),
        "--user", BUILDER_USER, "--key", str(tier.base / "controller_key"), "--host-key", arm64.host_key,
        "--python", "/usr/bin/python3.11", "--no-build-check",
    )  # fmt: skip
    assert bare.returncode != 0 and "builder_sudo_agent" in bare.stdout + bare.stderr, (
        bare.stdout + bare.stderr
    )

    # Only zlib-ext's and ffi-abi3-ext's new pairs are built: what else waits for aarch64
    # (hangs-py2) is skipped.
    tier.controller("add", "ffi-abi3-ext")  # known already after the armv7l repair test
    queued = {(j["name"], j["abi"]) for j in json.loads(tier.controller("queue", "--json").stdout)}
    assert {("zlib-ext", AARCH64_ABI), ("ffi-abi3-ext", AARCH64_ABI)} <= queued, queued
    for name in {n for n, abi in queued if n not in ("zlib-ext", "ffi-abi3-ext")}:
        assert tier.controller("skip", name, "--reason", "not part of the arm64 test").returncode == 0
    run = tier.controller("run")
    assert ", failed 0" in run.stdout, run.stdout + run.stderr
    assert tier.controller("publish").returncode == 0
    www = tier.base / "data" / "www"
    assert "zlib_ext-1.0-cp311-cp311-linux_aarch64.whl" in {p.name for p in www.rglob("*.whl")}

    # With repair on, ffi-abi3-ext's aarch64 build is repaired for bookworm's glibc: libffi inside.
    started = time.monotonic()
    _add_repair_tools(tier, AARCH64_ABI)
    assert tier.controller("rebuild", "ffi-abi3-ext", "--abi", AARCH64_ABI).returncode == 0
    run = tier.controller("run", PIWHEELS_REPAIR="auditwheel")
    assert "built 1, failed 0" in run.stdout, run.stdout + run.stderr
    assert tier.controller("publish").returncode == 0
    repaired = "ffi_abi3_ext-1.0-cp38-abi3-manylinux_2_36_aarch64.whl"
    found = list(www.rglob(repaired))
    assert found, f"no {repaired} published: {_wheels(tier, 'ffi_abi3_ext')}"
    with zipfile.ZipFile(found[0]) as archive:
        grafted = [n for n in archive.namelist() if n.startswith("ffi_abi3_ext.libs/libffi")]
    assert [n for n in grafted if ".so.8" in n], f"libffi.so.8 is not inside {repaired}: {grafted}"

    # pip inside the arm64 host installs both from our index alone and imports them.
    with serving(www) as url:
        check = "import zlib_ext, ffi_abi3_ext; assert zlib_ext.crc('hello') == 907060870; "
        check += "assert ffi_abi3_ext.call_add(2, 3) == 5"
        installed = arm64.host.ssh(
            "export PIP_CONFIG_FILE=/dev/null && python3.11 -m venv /tmp/v311 && /tmp/v311/bin/pip install "
            f"--no-cache-dir --only-binary :all: --index-url {url}/simple/ zlib-ext ffi-abi3-ext && "
            f'/tmp/v311/bin/python -c "{check}" && '
            "cat /tmp/v311/lib/python3.11/site-packages/*_ext-1.0.dist-info/WHEEL"
        )
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    assert f"Tag: {AARCH64_ABI}" in installed.stdout, installed.stdout[-3000:]
    assert "Tag: cp38-abi3-manylinux_2_36_aarch64" in installed.stdout, installed.stdout[-3000:]
    print(f"repair on aarch64: rebuild, publish and install {time.monotonic() - started:.0f}s")
    print("ffi-abi3-ext builds (aarch64: off, then repair on):", _build_seconds(tier, "ffi-abi3-ext"))


def test_one_master_keeps_the_armhf_and_arm64_builders_apart(tier: Tier, arm64: Arm64) -> None:
    builders = {b["name"] for b in json.loads(tier.controller("builders", "list", "--json").stdout)}
    if builders != {"arm1", "arm64"}:  # this test alone: converge both first
        assert tier.playbook().returncode == 0 and tier.playbook(arm64.inventory).returncode == 0
    # Each builder builds only its own platform's ABIs, each ABI its own queue.
    pythons = _db(tier, "SELECT b.name, a.tag FROM builder_pythons p JOIN builders b ON b.id = p.builder_id "
                        "JOIN abis a ON a.id = p.abi_id")  # fmt: skip
    assert pythons == {("arm1", abi) for abi in ARMV7L_ABIS} | {("arm64", AARCH64_ABI)}, pythons
    builds = _db(tier, "SELECT b.name, a.platform_tag FROM builds d JOIN builders b ON b.id = d.builder_id "
                       "JOIN abis a ON a.id = d.abi_id")  # fmt: skip
    assert builds <= {("arm1", "linux_armv7l"), ("arm64", "linux_aarch64")}, builds

    # A project whose upstream ships a manylinux aarch64 wheel (and an sdist): the wheel covers
    # the arm64 pair through the arm64 builder's own glibc (bookworm's 2.36; the armhf bullseye
    # builder's 2.31 would refuse a 2_34 wheel), never an armhf one; those wait for armhf builds.
    upstream = tier.base / "upstream"
    make_sdist(PACKAGES / "c-ext", upstream)
    make_wheel(upstream, "c-ext", "1.0", tag="cp311-cp311-manylinux_2_34_aarch64")
    assert tier.controller("add", "c-ext").returncode == 0
    covered = _db(tier, "SELECT a.tag, w.filename FROM upstream_coverage c JOIN abis a ON a.id = c.abi_id "
                        "JOIN upstream_wheels w ON w.id = c.wheel_id")  # fmt: skip
    assert covered == {(AARCH64_ABI, "c_ext-1.0-cp311-cp311-manylinux_2_34_aarch64.whl")}, covered
    queued = {j["abi"] for j in json.loads(tier.controller("queue", "--json").stdout) if j["name"] == "c-ext"}
    assert queued == ARMV7L_ABIS, queued

    # zlib-ext's wheels each cover their own platform's pairs, and its page says so.
    coverage = _db(tier, "SELECT a.tag, f.filename FROM coverage c JOIN abis a ON a.id = c.abi_id "
                         "JOIN files f ON f.id = c.file_id WHERE f.filename LIKE 'zlib_ext-%'")  # fmt: skip
    assert coverage == {
        ("cp27-cp27mu-linux_armv7l", "zlib_ext-1.0-cp27-cp27mu-linux_armv7l.whl"),
        ("cp39-cp39-linux_armv7l", "zlib_ext-1.0-cp39-cp39-linux_armv7l.whl"),
        (AARCH64_ABI, "zlib_ext-1.0-cp311-cp311-linux_aarch64.whl"),
    }, coverage
    assert tier.controller("publish").returncode == 0
    zlib = _cells(tier, "zlib-ext")
    assert zlib == {abi: ("built", name) for abi, name in coverage}, zlib
    c_ext = _cells(tier, "c-ext")
    assert c_ext[AARCH64_ABI][0] in ("upstream", "mirrored"), c_ext
    assert {abi: state for abi, (state, _) in c_ext.items() if abi != AARCH64_ABI} == dict.fromkeys(
        ARMV7L_ABIS, "pending"
    ), c_ext
    # The index lists both platforms' wheels of zlib-ext; pip on each picks its own (above).
    listing = (tier.base / "data" / "www" / "simple" / "zlib-ext" / "index.html").read_text()
    assert all(name in listing for _, name in coverage), listing
