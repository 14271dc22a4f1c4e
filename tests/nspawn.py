"""A Debian bookworm machine booted with ``systemd-nspawn --boot``: systemd is its PID 1.

The root is made once with debootstrap and kept outside the clone, in
``/var/cache/piwheels-tests/bookworm-master``; each container boots a copy of it. The machine
shares this host's network but answers SSH only on a loopback address of its own (127.0.1.x)
and an unused port, with a host key made for it and checked by every client.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
CACHE = Path("/var/cache/piwheels-tests")
BASE = CACHE / "bookworm-master"
APT_ARCHIVES = CACHE / "apt-archives"  # kept between runs: the master's packages
PIP_CACHE = CACHE / "pip"  # and root's pip cache, which the role's installs use
# What an operator's freshly installed Debian has that minbase lacks: systemd as init, sshd,
# Python for Ansible. Everything else the master role installs itself.
BASE_PACKAGES = "systemd,systemd-sysv,dbus,openssh-server,python3,ca-certificates,iproute2,procps"
# Users the container makes get uids far from this host's test users (1000-1999): the
# container shares the host's uids (see docs/development.md for why it has no user namespace of its own),
# and other tests end processes by uid. Below systemd's DynamicUser range (61184-65519):
# useradd refuses a UID_MIN above UID_MAX.
CONTAINER_UIDS = (42000, 42999)
# The cgroup hierarchies systemd tracks its units in, on this host's cgroup v1 ("hybrid") layout.
CGROUP_TREES = (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"))


def why_no_boot() -> str | None:
    """Why a booted container cannot be had here, or None."""
    if os.geteuid() != 0:
        return "systemd-nspawn --boot needs root"
    for program in ("systemd-nspawn", "debootstrap"):
        if shutil.which(program) is None:
            return f"{program} not found: apt-get install systemd-container debootstrap"
    if not Path("/sys/fs/cgroup").is_dir():
        return "no cgroup file system at /sys/fs/cgroup"
    return None


def debian_mirror() -> str:
    """This machine's Debian mirror for bookworm, read from its APT sources."""
    sources = Path("/etc/apt")
    for path in [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*"))]:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            for block in text.split("\n\n"):
                fields = dict(
                    line.split(":", 1)
                    for line in block.splitlines()
                    if ":" in line and not line.startswith("#")
                )
                if "bookworm" in fields.get("Suites", "").split() and fields.get("URIs", "").strip():
                    return fields["URIs"].split()[0]
        elif path.suffix == ".list":
            for line in text.splitlines():
                words = [w for w in line.split() if not w.startswith("[")]
                if len(words) >= 3 and words[0] == "deb" and words[2] == "bookworm":
                    return words[1]
    raise RuntimeError("no APT source for Debian bookworm in /etc/apt: the root cannot be made")


def base_root() -> Path:
    """The cached bookworm root, made with debootstrap on first use (a few minutes)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "bookworm-master.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (BASE / ".complete").exists():
            return BASE
        work = Path(tempfile.mkdtemp(prefix="bookworm-master.", dir=CACHE))
        # mkdtemp makes the folder 0700; as the machine's "/" that locks out every user but root
        # (dbus-daemon, as messagebus, then cannot read its own configuration and never starts).
        work.chmod(0o755)
        proc = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm", str(work),
             debian_mirror()],
            capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if proc.returncode != 0:
            shutil.rmtree(work, ignore_errors=True)
            raise RuntimeError(f"debootstrap failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        for key in (work / "etc" / "ssh").glob("ssh_host_*"):
            key.unlink()  # each container gets a host key of its own
        (work / ".complete").touch()
        shutil.rmtree(BASE, ignore_errors=True)
        work.rename(BASE)
        return BASE


def _keygen(path: Path, comment: str) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)  # fmt: skip
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Machine:
    """A booted container, reached as root over SSH on ``address:port``."""

    name: str
    root: Path
    address: str
    port: int
    key_file: Path
    known_hosts: Path
    log: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    cgroups: list[Path] = field(default_factory=list, repr=False)

    def ssh_args(self) -> list[str]:
        return [
            "ssh", "-i", str(self.key_file), "-p", str(self.port), "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "ConnectTimeout=10", f"root@{self.address}",
        ]  # fmt: skip

    def sh(
        self, command: str, *, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command in the machine as root."""
        proc = subprocess.run([*self.ssh_args(), command], capture_output=True, text=True, timeout=timeout,
                              check=False, stdin=subprocess.DEVNULL)  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{command!r} exited {proc.returncode} in {self.name}:\n{proc.stdout}{proc.stderr}"
            )
        return proc

    def boot(self) -> None:
        """Boot and wait until systemd says the system is up (running or degraded)."""
        APT_ARCHIVES.mkdir(parents=True, exist_ok=True)
        PIP_CACHE.mkdir(parents=True, exist_ok=True)
        # --register=no --keep-unit: this host's PID 1 is not systemd, there is no machined.
        command = [
            "systemd-nspawn", "--boot", "--register=no", "--keep-unit", "--console=passive",
            "-D", str(self.root), "-M", self.name, f"--bind={APT_ARCHIVES}:/var/cache/apt/archives",
            f"--bind={PIP_CACHE}:/root/.cache/pip",
        ]  # fmt: skip
        # Without a machined, nspawn puts the machine in "payload" under its own cgroup: started from
        # the root cgroup, every machine on this host (and one left over by a killed run) would share
        # /payload, and their systemds would manage each other's units. Each gets a cgroup of its own.
        group = f"piwheels-test-{self.name}-{os.getpid()}"
        self.cgroups = [tree / group for tree in CGROUP_TREES if (tree / "cgroup.procs").exists()]
        for cgroup in self.cgroups:
            cgroup.mkdir(exist_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=self._enter_cgroups
            )
        deadline = time.monotonic() + 120
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} did not boot:\n{self.log.read_text(errors='replace')[-3000:]}"
                )
            try:
                with socket.create_connection((self.address, self.port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name}: no sshd on {self.address}:{self.port}") from None
                time.sleep(0.2)
        while True:
            state = self.sh("systemctl is-system-running", check=False, timeout=30).stdout.strip()
            if state in {"running", "degraded"}:
                return
            if time.monotonic() > deadline:
                jobs = self.sh("systemctl list-jobs --no-pager; journalctl -b --no-pager -n 40", check=False)
                raise RuntimeError(f"{self.name}: system {state}:\n{jobs.stdout}")
            time.sleep(0.5)

    def _enter_cgroups(self) -> None:
        """In nspawn's process before it starts: its own cgroups, and a halt if the test dies."""
        for cgroup in self.cgroups:
            (cgroup / "cgroup.procs").write_text(f"{os.getpid()}\n")
        # A test run killed outright would leave the machine running, its sshd on the host's network.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    def stop(self) -> None:
        """Shut the machine down (SIGTERM to nspawn halts it), killing it if it takes too long."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        for cgroup in self.cgroups:
            for folder in sorted((p for p in cgroup.rglob("*") if p.is_dir()), reverse=True):
                with contextlib.suppress(OSError):
                    folder.rmdir()
            with contextlib.suppress(OSError):
                cgroup.rmdir()


def _trust_like_this_host(root: Path) -> None:
    """pip in the machine trusts the certificates pip here trusts (this host may reach PyPI through
    a proxy whose authority only its own bundle holds); the machine shares this host's network."""
    bundle = next(
        (
            Path(v)
            for v in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"))
            if v and Path(v).is_file()
        ),
        Path("/etc/ssl/certs/ca-certificates.crt"),
    )
    if not bundle.is_file():
        return
    shutil.copy(bundle, root / "etc" / "ssl" / "certs" / "piwheels-test-host.crt")
    (root / "etc" / "pip.conf").write_text("[global]\ncert = /etc/ssl/certs/piwheels-test-host.crt\n")


def make_machine(folder: Path, name: str, address: str) -> Machine:
    """A copy of the cached root in ``folder``, with its own host key, root's key and sshd address."""
    base = base_root()
    root = folder / "root"
    subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(root)], check=True)
    root.chmod(0o755)  # a root cached by an earlier version of this module may be 0700
    (root / "etc" / "hostname").write_text(f"{name}\n")
    defs = root / "etc" / "login.defs"
    text = re.sub(r"(?m)^#?[UG]ID_M(IN|AX)\b.*\n", "", defs.read_text())
    first, last = CONTAINER_UIDS
    defs.write_text(text + "".join(f"{kind}ID_MIN\t{first}\n{kind}ID_MAX\t{last}\n" for kind in "UG"))
    host_key = _keygen(root / "etc" / "ssh" / "ssh_host_ed25519_key", name)
    port = _free_port(address)
    (root / "etc" / "ssh" / "sshd_config.d" / "piwheels-test.conf").write_text(
        f"ListenAddress {address}:{port}\nHostKey /etc/ssh/ssh_host_ed25519_key\n"
        "PasswordAuthentication no\nPermitRootLogin prohibit-password\n"
    )
    _trust_like_this_host(root)
    key_file = folder / "root_key"
    public = _keygen(key_file, f"root of {name}")
    ssh_dir = root / "root" / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(public + "\n")
    known_hosts = folder / "known_hosts"
    known_hosts.write_text(f"[{address}]:{port} {host_key}\n")
    return Machine(name, root, address, port, key_file, known_hosts, folder / "nspawn.log")
