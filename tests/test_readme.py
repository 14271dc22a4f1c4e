"""README's first command, run for real on a fresh Debian bookworm: as root on a Debian without
sudo, and as a user with sudo.

The command is read from README.md's first ``sh`` block, so this test follows the README. It runs
in a copy of a cached minimal bookworm root (minbase + ca-certificates) with a copy of this
repository as its working folder; ``serve`` gets a port of its own, and README's check (a venv of
Debian's ``/usr/bin/python3``, ``pip install --index-url …/simple/ msgpack``) installs from it.
pip reaches PyPI through this machine's proxy: its CA certificates go into the copy's store.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from debian_roots import debian_root, install_packages, run_in_root
from helpers import free_port

ROOT = Path(__file__).resolve().parent.parent
HOST_CAS = Path("/usr/local/share/ca-certificates")
# Everything a clone has, not what this checkout made (the venv, caches, the egg-info).
NOT_IN_A_CLONE = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.egg-info", ".pytest_cache", ".mypy_cache", ".ruff_cache", "build"
)
# The whole command builds msgpack and markupsafe from their sdists on 2 shared cores.
TIMEOUT = 2400

pytestmark = [
    pytest.mark.build,
    pytest.mark.skipif(os.geteuid() != 0, reason="debootstrap, chroot and mounts need root"),
]


def readme_command() -> str:
    """The first line of README.md's first ``sh`` block: the command a new user runs first."""
    found = re.search(r"^```sh\n(.*?)\n", (ROOT / "README.md").read_text(), re.MULTILINE)
    assert found, "README.md has no ```sh block"
    command = found.group(1).strip()
    assert command.startswith("$(command -v sudo) ") and command.endswith("piwheels-ctl serve"), command
    return command


def fresh_root(tmp_path: Path) -> Path:
    """A copy of the cached bookworm root (never the cached root itself) that trusts this
    machine's CA certificates."""
    cached = debian_root("bookworm", ["ca-certificates"], name="bookworm-amd64-readme")
    root = tmp_path / "root"
    subprocess.run(["cp", "-a", "--reflink=auto", str(cached), str(root)], check=True)
    for cert in HOST_CAS.glob("*.crt"):
        shutil.copyfile(cert, root / "usr/local/share/ca-certificates" / cert.name)
    # No package lists, as in Debian's container images (and lists go stale in a cached root).
    shutil.rmtree(root / "var/lib/apt/lists")
    (root / "var/lib/apt/lists/partial").mkdir(parents=True)
    done = run_in_root(root, ["update-ca-certificates"])
    assert done.returncode == 0, done.stdout + done.stderr
    return root


def run_readme(root: Path, home: str, user: str | None) -> subprocess.CompletedProcess[str]:
    """README's command in ``home`` (as ``user``, or root), its ``serve`` on a port of its own in
    the background, then README's check against it; serve is stopped at the end."""
    port = free_port()
    command = readme_command().removesuffix("serve") + f"serve --port {port}"
    url = f"http://127.0.0.1:{port}/simple/"
    as_user = ["runuser", "-u", user, "--"] if user else []
    readme = shlex.join(
        [*as_user, "env", f"HOME={home}", "bash", "-c", f"cd {home}/piwheels-ctl && {command}"]
    )
    check = (
        f"/usr/bin/python3 -m venv {home}/try && {home}/try/bin/pip install --index-url {url} msgpack"
        f" && {home}/try/bin/python -c 'import msgpack; print(\"msgpack\", msgpack.version)'"
    )
    if user:
        check = shlex.join(["runuser", "-u", user, "--", "bash", "-c", check])
    ready = f"import urllib.request; urllib.request.urlopen({url + 'msgpack/'!r}, timeout=5)"
    # set -m: the command runs in a process group of its own, so that serve is stopped with it.
    script = f"""set -m
{readme} &
pid=$!
until [ -x /usr/bin/python3 ] && /usr/bin/python3 -c {shlex.quote(ready)} 2>/dev/null; do
    kill -0 $pid 2>/dev/null || {{ wait $pid; echo "README's command exited $? before serving"; exit 97; }}
    sleep 3
done
echo "served at {url}"
{check}
rc=$?
kill -- -$pid
wait $pid
exit $rc
"""
    return run_in_root(
        root,
        ["bash", "-c", script],
        timeout=TIMEOUT,
        env={"PIP_CONFIG_FILE": "/dev/null", "DEBIAN_FRONTEND": "noninteractive", "HOME": "/root"},
    )


def copy_clone(root: Path, home: str) -> None:
    shutil.copytree(ROOT, root / home.lstrip("/") / "piwheels-ctl", ignore=NOT_IN_A_CLONE, symlinks=True)


def assert_served_and_installed(done: subprocess.CompletedProcess[str]) -> None:
    output = done.stdout[-6000:] + done.stderr[-6000:]
    assert done.returncode == 0, f"README's command or its check failed (rc {done.returncode}):\n{output}"
    assert "served at" in done.stdout, output
    assert re.search(r"^msgpack \(1, 1, 0\)$", done.stdout, re.MULTILINE), output
    # The wheel came from the farm (built here), not from PyPI: the index is the only one pip had.
    assert re.search(r"msgpack-1\.1\.0-cp311-cp311-\S+\.whl", done.stdout), output


def test_readme_as_root_without_sudo(tmp_path: Path) -> None:
    root = fresh_root(tmp_path)
    assert run_in_root(root, ["sh", "-c", "command -v sudo"]).returncode != 0, "the fresh root has sudo"
    copy_clone(root, "/root")
    assert_served_and_installed(run_readme(root, "/root", None))


def test_readme_as_a_user_with_sudo(tmp_path: Path) -> None:
    root = fresh_root(tmp_path)
    install_packages(root, ["sudo"])
    # As fresh as before: no package lists left by installing sudo.
    done = run_in_root(root, ["sh", "-c", "apt-get clean && rm -rf /var/lib/apt/lists/*"])
    assert done.returncode == 0, done.stdout + done.stderr
    home = "/home/pi"
    setup = (
        "useradd -m -s /bin/bash pi && echo 'pi ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/pi"
        " && chmod 0440 /etc/sudoers.d/pi"
    )
    done = run_in_root(root, ["sh", "-c", setup])
    assert done.returncode == 0, done.stdout + done.stderr
    copy_clone(root, home)
    done = run_in_root(root, ["chown", "-R", "pi:pi", f"{home}/piwheels-ctl"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert_served_and_installed(run_readme(root, home, "pi"))
    # The user made the venv and the data, not root through sudo.
    uid = next(
        int(f[2])
        for f in (line.split(":") for line in (root / "etc/passwd").read_text().splitlines())
        if f[0] == "pi"
    )
    made = root / home.lstrip("/") / "piwheels-ctl" / ".venv"
    assert made.stat().st_uid == uid, f"{made} is owned by uid {made.stat().st_uid}, not pi's {uid}"
