"""Debian roots made with debootstrap, cached outside the clone, and commands run inside them.

A root is made once (a few minutes) under ``CACHE`` and reused by later runs and by CI on the
same machine. Commands run in it through ``unshare --mount`` + ``chroot``: the root is bound
onto itself (bubblewrap inside needs a mount point as its root), ``/proc`` is mounted, and the
machine's build-uid locks are shared, so that builds inside and outside never take one uid.
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

CACHE = Path("/var/cache/piwheels-tests")
UID_LOCKS = "/run/piwheels-ctl/build-uids"


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (read from its sources at run time)."""
    texts = [p.read_text() for p in Path("/etc/apt").glob("sources.list*/**/*") if p.is_file()]
    sources = Path("/etc/apt/sources.list")
    if sources.exists():
        texts.append(sources.read_text())
    for text in texts:
        for url in re.findall(r"(?:URIs:|^deb)\s+(\S+)", text, re.MULTILINE):
            if url.rstrip("/").endswith("/debian"):
                return str(url)
    raise RuntimeError("no Debian mirror found in /etc/apt/sources.list*")


def cached_root(name: str, make: Callable[[Path], None]) -> Path:
    """The cached root ``name``: made once by ``make`` (into a partial folder, renamed when
    done), under a lock that other processes making it wait on."""
    root = CACHE / name
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / "usr" / "bin").is_dir():
            return root
        partial = root.with_name(root.name + ".tmp")
        shutil.rmtree(partial, ignore_errors=True)
        make(partial)
        partial.rename(root)
        return root


def debian_root(release: str, packages: list[str], *, name: str | None = None) -> Path:
    """A ``release`` root for this machine's architecture with ``packages``, made once and cached
    (under ``name`` when given: a cached root's packages never change, so other lists get other
    names)."""
    root = CACHE / (name or f"{release}-amd64")
    if (root / "usr" / "bin").is_dir():
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = root.with_name(root.name + ".tmp")
    shutil.rmtree(partial, ignore_errors=True)
    command = [
        "debootstrap", "--variant=minbase", f"--include={','.join(packages)}",
        release, str(partial), debian_mirror(),
    ]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"debootstrap {release} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    partial.rename(root)
    return root


def run_in_root(
    root: Path, argv: list[str], *, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as root inside ``root`` with a clean environment."""
    os.makedirs(UID_LOCKS, mode=0o700, exist_ok=True)
    inside_locks = f"{root}{UID_LOCKS}"
    variables = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", **(env or {})}
    script = " && ".join(
        [
            f"mount --bind {shlex.quote(str(root))} {shlex.quote(str(root))}",
            f"mount -t proc proc {shlex.quote(str(root / 'proc'))}",
            f"mkdir -p {shlex.quote(inside_locks)}",
            f"mount --bind {UID_LOCKS} {shlex.quote(inside_locks)}",
            "exec chroot "
            + shlex.quote(str(root))
            + " env -i "
            + " ".join(shlex.quote(f"{k}={v}") for k, v in variables.items())
            + " "
            + " ".join(shlex.quote(a) for a in argv),
        ]
    )
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def install_packages(root: Path, packages: list[str]) -> None:
    """Install those of ``packages`` that ``root`` lacks, from the Debian mirror (kept in the cache)."""
    missing = [p for p in packages if run_in_root(root, ["dpkg", "-s", p]).returncode != 0]
    if not missing:
        return
    sources = root / "etc" / "apt" / "sources.list"
    if not sources.read_text().strip():
        raise RuntimeError(f"{root}: no apt sources to install {missing} from")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", *missing]):
        done = run_in_root(root, argv, timeout=1800, env=env)
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} in {root} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )


# Debian bullseye as a Pi user of Raspberry Pi OS bullseye has it: Python 3.9, Debian's pip 20.3.4.
BULLSEYE_PIP_PACKAGES = ["python3", "python3-pip", "python3-venv", "ca-certificates"]


def bullseye_pip_root() -> Path:
    """A cached bullseye root with Debian's own pip (20.3.4), in which ``localhost`` resolves
    (debootstrap writes no /etc/hosts; a Pi's has one, and TLS certificates name localhost)."""
    root = debian_root("bullseye", BULLSEYE_PIP_PACKAGES, name="bullseye-amd64-pip")
    hosts = root / "etc" / "hosts"
    if not hosts.exists():
        hosts.write_text("127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n")
    return root


def pip_install_in_root(
    root: Path, index_url: str, requirements: list[str], *, cert: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``pip install`` of ``requirements`` from ``index_url`` with the root's own pip, in a venv
    made from the root's own python3 (left in the root's /tmp, which nothing else reads)."""
    script = "rm -rf /tmp/pip-client && python3 -m venv /tmp/pip-client && /tmp/pip-client/bin/pip --version"
    options = ["--index-url", index_url, "--disable-pip-version-check", "--no-cache-dir"]
    if cert is not None:
        shutil.copyfile(cert, root / "tmp" / "pip-client-ca.pem")
        options += ["--cert", "/tmp/pip-client-ca.pem"]
    script += " && /tmp/pip-client/bin/pip install " + " ".join(
        shlex.quote(a) for a in options + requirements
    )
    return run_in_root(root, ["sh", "-c", script], env={"PIP_CONFIG_FILE": "/dev/null"})
