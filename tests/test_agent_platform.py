"""The agent's view of the machine: a 32-bit userland on a 64-bit kernel, and root through sudo.

This machine is amd64, so "a 32-bit userland on an aarch64 kernel" is a report made up here
(``kernel_machine`` and ``pointer_bits`` replaced: a fake, named as such); what the agent does
with it is real: the personality syscall, the platform the build is told, the tags it probes.
The build is a shell script standing in for ``python -m pip wheel`` (a fake interpreter).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from piwheels_ctl.agent import agent, buildplatform, buildstep
from piwheels_ctl.agent.jobspec import request

SYSTEM_PYTHON = "/usr/bin/python3"  # in the sandbox's /usr, unlike this venv's interpreter
AGENT = Path(agent.__file__)


def _fake_python(folder: Path, body: str) -> str:
    """A fake interpreter whose ``-m pip wheel ...`` runs ``body``; anything else is Python 3."""
    script = folder / "fake" / "bin" / "python"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(f'#!/bin/sh\n[ "$1" = "-m" ] || exec {SYSTEM_PYTHON} "$@"\n{body}\n')
    script.chmod(0o755)
    return str(script)


@pytest.fixture
def public() -> Iterator[Path]:
    """A folder a build's own uid can pass through (pytest's are root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="piwheels-platform-"))
    folder.chmod(0o711)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def reported_aarch64(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake: the kernel reports aarch64 and the interpreter is 32-bit (Raspberry Pi OS on a Pi 4)."""
    monkeypatch.setattr(buildplatform, "kernel_machine", lambda: "aarch64")
    monkeypatch.setattr(buildplatform, "pointer_bits", lambda: 32)


@pytest.mark.usefixtures("reported_aarch64")
def test_the_probe_tags_a_32_bit_userland_on_a_64_bit_kernel_for_the_userland() -> None:
    probe = agent.probe()
    assert (probe["platform_tag"], probe["personality"], probe["machine"]) == (
        "linux_armv7l",
        "linux32",
        "aarch64",
    ), probe


def test_a_64_bit_userland_on_the_same_kernel_builds_for_aarch64(monkeypatch: pytest.MonkeyPatch) -> None:
    # Fake: the kernel reports aarch64, the interpreter is 64-bit and was built for linux-aarch64
    # (64-bit Raspberry Pi OS); the armv7l case above differs from it only in the pointer size.
    monkeypatch.setattr(buildplatform, "kernel_machine", lambda: "aarch64")
    monkeypatch.setattr(buildplatform, "pointer_bits", lambda: 64)
    monkeypatch.setattr(buildplatform.sysconfig, "get_platform", lambda: "linux-aarch64")
    probe = agent.probe()
    assert (probe["platform_tag"], probe["personality"], probe["machine"]) == (
        "linux_aarch64",
        None,
        "aarch64",
    ), probe
    assert buildplatform.build_personality() is None


@pytest.mark.usefixtures("reported_aarch64")
@pytest.mark.parametrize("sandbox_kind", ["bwrap", "user"])
def test_a_build_under_a_reported_aarch64_machine_runs_in_the_32_bit_personality(
    public: Path, sandbox_kind: str
) -> None:
    tmp_path = public
    body = 'echo "MACHINE=$(uname -m)"; echo "HOST_PLATFORM=$_PYTHON_HOST_PLATFORM"; exit 1'
    result = buildstep.build(request(
        _fake_python(tmp_path, body), "demo", "1.0", str(tmp_path / "outbox"), str(tmp_path / "build.log"),
        str(tmp_path / "work"), sandbox_kind=sandbox_kind,
    ))  # fmt: skip
    assert result.get("sandbox") == sandbox_kind, result
    log = (tmp_path / "build.log").read_text()
    # The kernel's answer under PER_LINUX32: on this amd64 kernel "i686" (on an arm64 one "armv8l").
    assert "MACHINE=i686" in log, log
    assert "HOST_PLATFORM=linux-armv7l" in log, log


def test_a_64_bit_build_keeps_the_kernels_personality(tmp_path: Path) -> None:
    body = 'echo "MACHINE=$(uname -m)"; echo "HOST_PLATFORM=${_PYTHON_HOST_PLATFORM:-unset}"; exit 1'
    buildstep.build(request(
        _fake_python(tmp_path, body), "demo", "1.0", str(tmp_path / "outbox"), str(tmp_path / "build.log"),
        str(tmp_path / "work"),
    ))  # fmt: skip
    log = (tmp_path / "build.log").read_text()
    assert f"MACHINE={os.uname().machine}" in log and "HOST_PLATFORM=unset" in log, log


# Root through sudo: sudo sets SUDO_UID and SUDO_GID; here the agent runs as root with them set
# by the test (a fake sudo, named as such). The emulated ARM tier (test_arm.py) runs the real one.
SUDO_USER = "pwsudo"


@pytest.fixture
def sudo_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SUDO_USER)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", SUDO_USER], check=True)
        return pwd.getpwnam(SUDO_USER)


def _agent_as_sudo(user: pwd.struct_passwd, *args: str) -> dict[str, object]:
    env = {"PATH": "/usr/bin:/bin", "SUDO_UID": str(user.pw_uid), "SUDO_GID": str(user.pw_gid)}
    done = subprocess.run(
        [sys.executable, str(AGENT), *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _sudo_build(tmp_path: Path, user: pwd.struct_passwd, work_root: Path, body: str) -> dict[str, object]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    os.chown(home, user.pw_uid, user.pw_gid)
    return _agent_as_sudo(
        user, "build", "--python", _fake_python(tmp_path, body), "--name", "demo", "--version", "1.0",
        "--outbox", str(home / "outbox" / "1"), "--log", str(home / "outbox" / "1" / "build.log"),
        "--work-root", str(work_root), "--sandbox", "user",
    )  # fmt: skip


def test_root_through_sudo_refuses_a_work_folder_the_user_owns(
    public: Path, sudo_user: pwd.struct_passwd
) -> None:
    tmp_path = public
    work = tmp_path / "home" / "work"
    work.mkdir(parents=True)
    os.chown(work, sudo_user.pw_uid, sudo_user.pw_gid)
    result = _sudo_build(tmp_path, sudo_user, work, "exit 0")
    assert result["status"] == "error", result
    assert f"{work} is not root's alone (owner uid {sudo_user.pw_uid}" in str(result["error"]), result


def test_root_through_sudo_builds_as_a_uid_of_its_own_and_writes_as_the_user(
    public: Path, sudo_user: pwd.struct_passwd
) -> None:
    tmp_path = public
    work = tmp_path / "root-work"
    work.mkdir(mode=0o711)
    body = 'echo "BUILD_UID=$(id -u)"; touch "$HOME/../wheels/demo-1.0-py3-none-any.whl"'
    result = _sudo_build(tmp_path, sudo_user, work, body)
    assert result["status"] == "success" and result["sandbox"] == "user", result
    outbox = tmp_path / "home" / "outbox" / "1"
    log = (outbox / "build.log").read_text()
    uid = int(log.split("BUILD_UID=")[1].split()[0])
    assert uid >= 2_000_000_000, log
    # What the SSH user gets back is the SSH user's: it can rsync it and remove it.
    for path in (outbox, outbox / "build.log", outbox / "demo-1.0-py3-none-any.whl"):
        assert path.stat().st_uid == sudo_user.pw_uid, path
    shutil.rmtree(tmp_path / "home", ignore_errors=True)


def test_root_through_sudo_reads_a_file_url_only_as_the_user(
    public: Path, sudo_user: pwd.struct_passwd
) -> None:
    secret = public / "secret-1.0.tar.gz"
    secret.write_text("root's alone")
    secret.chmod(0o600)
    work = public / "root-work"
    work.mkdir(mode=0o711)
    home = public / "home"
    home.mkdir()
    os.chown(home, sudo_user.pw_uid, sudo_user.pw_gid)
    result = _agent_as_sudo(
        sudo_user, "build", "--python", _fake_python(public, "exit 0"), "--name", "secret",
        "--version", "1.0", "--outbox", str(home / "outbox"), "--log", str(home / "build.log"),
        "--work-root", str(work), "--sandbox", "user", "--sdist-url", f"file://{secret}",
    )  # fmt: skip
    assert result["status"] == "error" and "Permission denied" in str(result["error"]), result
    assert not list(work.rglob("secret-1.0.tar.gz")), "root copied the file for the user"


@pytest.mark.parametrize(("arch", "armv6"), [("6", True), ("7", False)])
def test_an_armv6_userland_is_told_by_the_compilers_default_architecture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, arch: str, armv6: bool
) -> None:
    fake_cc = tmp_path / "cc"  # a fake compiler (named as such): this machine's targets x86-64
    fake_cc.write_text(f"#!/bin/sh\necho '#define __ARM_ARCH {arch}'\n")
    fake_cc.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.setattr(buildplatform, "os_release", lambda: {"ID": "debian"})
    assert buildplatform.armv6_userland() is armv6


@pytest.mark.parametrize(("os_id", "armv6"), [("raspbian", True), ("debian", False)])
def test_without_a_compiler_raspbian_is_armv6(
    monkeypatch: pytest.MonkeyPatch, os_id: str, armv6: bool
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(buildplatform, "os_release", lambda: {"ID": os_id})
    assert buildplatform.armv6_userland() is armv6


def test_this_machines_compiler_is_not_armv6() -> None:
    assert buildplatform.armv6_userland() is False  # x86-64: no __ARM_ARCH at all, and not Raspbian
