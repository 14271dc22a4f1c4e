"""A cached x86_64 bookworm root with Debian's cross toolchains and the ARM multiarch Python.

The cross builder's tests run the agent inside it: ``dpkg --add-architecture armhf arm64``
happens in the root only (never on this machine), then ``gcc-arm-linux-gnueabihf``,
``gcc-aarch64-linux-gnu`` and ``libpython3.11-dev`` for both targets come from the Debian
mirror. Made once (a few minutes) under ``debian_roots.CACHE`` and reused by later runs.

The cross builder's farm test (tests/test_cross_ssh.py) needs a host, not a root: a copy of
it with what an operator's Debian server has (sshd, Python's apt module) and what the builder
role's native part installs (``HOST``), cached under a name of its own (``cross_host_root``),
so that its converge downloads only what the role's cross part adds.

Run as a script (``python tests/cross_roots.py``) to make both ahead of the tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from debian_roots import cached_root, debian_mirror, run_in_root

NAME = "bookworm-amd64-cross"
TARGETS = ("armhf", "arm64")
BASE = [
    "python3", "python3-venv", "python3-pip", "python3-setuptools", "python3-wheel",
    "build-essential", "pkg-config", "rsync", "bubblewrap", "ca-certificates", "procps",
]  # fmt: skip
CROSS = [
    "gcc-arm-linux-gnueabihf", "g++-arm-linux-gnueabihf", "libpython3.11-dev:armhf",
    "libc6-dev:armhf", "zlib1g-dev:armhf",
    "gcc-aarch64-linux-gnu", "g++-aarch64-linux-gnu", "libpython3.11-dev:arm64",
    "libc6-dev:arm64", "zlib1g-dev:arm64",
]  # fmt: skip


HOST_NAME = "bookworm-amd64-cross-host"
# Beside the cross root's: sshd and Python's apt module (an operator's server has them), and what
# the builder role installs on a bookworm builder (roles/builder/vars/Debian-bookworm.yml).
HOST = ["openssh-server", "python3-apt", "sudo", "python3.11-dev", "ccache"]


def _must(root: Path, argv: list[str]) -> None:
    done = run_in_root(root, argv, timeout=3600, env={"DEBIAN_FRONTEND": "noninteractive"})
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} in {root} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")


def cross_root() -> Path:
    """The bookworm amd64 root with the armhf and arm64 cross toolchains, made once (locked)."""

    def make(partial: Path) -> None:
        first = [
            "debootstrap", "--variant=minbase", f"--include={','.join(BASE)}",
            "bookworm", str(partial), debian_mirror(),
        ]  # fmt: skip
        proc = subprocess.run(first, capture_output=True, text=True, timeout=3600, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise RuntimeError(f"debootstrap bookworm failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        (partial / "etc" / "apt" / "sources.list").write_text(f"deb {debian_mirror()} bookworm main\n")
        for arch in TARGETS:
            _must(partial, ["dpkg", "--add-architecture", arch])
        _must(partial, ["apt-get", "update"])
        _must(partial, ["apt-get", "install", "-y", "--no-install-recommends", *CROSS])
        _must(partial, ["apt-get", "clean"])

    return cached_root(NAME, make)


def cross_host_root() -> Path:
    """A copy of the cross root with sshd and the builder role's native packages, made once."""
    source = cross_root()

    def make(partial: Path) -> None:
        argv = ["cp", "-a", "--reflink=auto", str(source), str(partial)]
        copied = subprocess.run(argv, capture_output=True, text=True, timeout=3600, stdin=subprocess.DEVNULL)
        if copied.returncode != 0:
            raise RuntimeError(f"copying {source} failed: {copied.stderr[-2000:]}")
        _must(partial, ["apt-get", "update"])
        _must(partial, ["apt-get", "install", "-y", "--no-install-recommends", *HOST])
        _must(partial, ["apt-get", "clean"])
        for key in (partial / "etc" / "ssh").glob("ssh_host_*"):
            key.unlink()  # each test's sshd gets a host key of its own

    return cached_root(HOST_NAME, make)


if __name__ == "__main__":
    print(cross_root())
    print(cross_host_root())
