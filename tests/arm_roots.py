"""Emulated ARM Debian roots: qemu-user through binfmt_misc, debootstrap --foreign, cached.

The kernel runs 32-bit ARM programs through ``qemu-arm-static`` and 64-bit ones through
``qemu-aarch64-static`` once they are registered with binfmt_misc. The ``F`` flag opens the
emulator at registration, so the root needs no copy of it; the ``C`` flag takes credentials from
the program rather than the emulator, so setuid programs (sudo) work inside. A root is made once
(about 16 minutes here, most of it the emulated second stage) under ``debian_roots.CACHE`` and
reused by later runs.

Run as a script (``python tests/arm_roots.py [RELEASE [ARCH]]``) to make a root (bullseye armhf
by default; ``bookworm arm64`` for the arm64 tier) ahead of the tests, e.g. in the background
while other work goes on.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

from debian_roots import cached_root, debian_mirror

BINFMT = Path("/proc/sys/fs/binfmt_misc")
QEMU_ARM = Path("/usr/bin/qemu-arm-static")
QEMU_AARCH64 = Path("/usr/bin/qemu-aarch64-static")
# The ELF header of a 32-bit little-endian ARM executable, and the mask of the bytes that count.
ARM_MAGIC = r"\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x28\x00"
ARM_MASK = r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"
ENTRY = "piwheels-qemu-arm"
# The same for a 64-bit little-endian AArch64 executable (machine 0xb7).
AARCH64_MAGIC = r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00"
AARCH64_ENTRY = "piwheels-qemu-aarch64"


class Emulation(NamedTuple):
    """How the kernel runs one Debian architecture's programs: emulator, binfmt entry, ELF magic."""

    qemu: Path
    entry: str
    magic: str
    # What binfmt_misc shows of that magic in another entry's status (the hex, without the mask).
    shown: str


EMULATION = {
    "armhf": Emulation(QEMU_ARM, ENTRY, ARM_MAGIC, "magic 7f454c460101010000000000000000000200"),
    "arm64": Emulation(
        QEMU_AARCH64, AARCH64_ENTRY, AARCH64_MAGIC, "magic 7f454c460201010000000000000000000200b7"
    ),
}

# What the bullseye builder role installs (with the test inventory's short build-deps list),
# plus what the tier needs to reach and drive the host: sshd, sudo, python3-apt for Ansible.
BULLSEYE_PACKAGES = [
    "python2.7", "python2.7-dev", "python3.9", "python3.9-dev", "python3-pip",
    "python3-setuptools", "python3-wheel", "python3-venv", "python3-apt",
    "build-essential", "ccache", "rsync", "bubblewrap", "zlib1g-dev", "libffi-dev",
    "openssh-server", "sudo", "ca-certificates", "procps", "util-linux",
]  # fmt: skip
BOOKWORM_PACKAGES = [
    "python3.11", "python3.11-dev", "python3-venv", "python3-apt", "build-essential", "ccache", "rsync",
    "bubblewrap", "zlib1g-dev", "libffi-dev", "openssh-server", "sudo", "ca-certificates", "procps",
]  # fmt: skip
PACKAGES = {"bullseye": BULLSEYE_PACKAGES, "bookworm": BOOKWORM_PACKAGES}
# Each architecture takes the release's list above; a new (release, arch) pair is a new cached
# root, so the lists of the roots made before stay as they are.


def why_no_arm_emulation(arch: str = "armhf") -> str | None:
    """None when ``arch`` (armhf, arm64) programs can run here, else what is missing, for a skip."""
    emulation = EMULATION[arch]
    if not emulation.qemu.exists():
        return f"{emulation.qemu} is missing (Debian package qemu-user-static)"
    if os.geteuid() != 0:
        return "registering qemu with binfmt_misc needs root"
    try:
        register_qemu(arch)
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"cannot register {emulation.qemu.name} with binfmt_misc: {exc}"
    return None


def register_qemu(arch: str = "armhf") -> None:
    """Register the emulator of ``arch`` for its ELF files with the F and C flags (idempotent)."""
    emulation = EMULATION[arch]
    if not (BINFMT / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], check=True)
    entry = BINFMT / emulation.entry
    if entry.exists():
        return
    # Another entry (e.g. the Debian package's, without C) would take these files first: off it goes.
    for other in BINFMT.iterdir():
        if other.name in ("register", "status") or other.name == emulation.entry:
            continue
        if emulation.shown in other.read_text():
            other.write_text("-1")
    (BINFMT / "register").write_text(
        f":{emulation.entry}:M::{emulation.magic}:{ARM_MASK}:{emulation.qemu}:FC"
    )


def register_qemu_arm() -> None:
    """Register ``qemu-arm-static`` (see ``register_qemu``)."""
    register_qemu("armhf")


def _chroot(root: Path, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    script = (
        f"mount --bind {root} {root} && mount -t proc proc {root}/proc && "
        f"mount --rbind /dev {root}/dev && exec chroot {root} env -i "
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive " + " ".join(argv)
    )
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def armhf_root(release: str = "bullseye", packages: list[str] | None = None) -> Path:
    """An armhf ``release`` root with ``packages``, made once (locked) and cached."""
    return arm_root(release, "armhf", packages)


def arm64_root(release: str = "bookworm", packages: list[str] | None = None) -> Path:
    """An arm64 ``release`` root with ``packages``, made once (locked) and cached."""
    return arm_root(release, "arm64", packages)


def arm_root(release: str, arch: str, packages: list[str] | None = None) -> Path:
    """A ``release`` root of ``arch`` with ``packages``, made once (locked) and cached."""
    register_qemu(arch)

    def make(partial: Path) -> None:
        wanted = packages if packages is not None else PACKAGES[release]
        first = [
            "debootstrap", "--foreign", f"--arch={arch}", "--variant=minbase",
            f"--include={','.join(wanted)}", release, str(partial), debian_mirror(),
        ]  # fmt: skip
        proc = subprocess.run(first, capture_output=True, text=True, timeout=3600, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise RuntimeError(
                f"debootstrap --foreign {release} {arch} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
            )
        second = _chroot(partial, ["/debootstrap/debootstrap", "--second-stage"], timeout=5400)
        if second.returncode != 0:
            log = partial / "debootstrap" / "debootstrap.log"
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(
                f"debootstrap --second-stage {release} {arch} failed:\n{second.stderr[-3000:]}{tail}"
            )
        (partial / "etc" / "apt" / "sources.list").write_text(f"deb {debian_mirror()} {release} main\n")

    return cached_root(f"{release}-{arch}", make)


if __name__ == "__main__":
    print(
        arm_root(
            sys.argv[1] if len(sys.argv) > 1 else "bullseye", sys.argv[2] if len(sys.argv) > 2 else "armhf"
        )
    )
