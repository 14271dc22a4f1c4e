"""Real sshd test hosts on loopback addresses: each its own address, user, home and keys."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from piwheels_ctl.farm.transport import Endpoint

SSHD = "/usr/sbin/sshd"


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        port: int = s.getsockname()[1]
        return port


def _keygen(path: Path, comment: str) -> str:
    """A new ed25519 key pair at ``path``; its public key as "TYPE BASE64"."""
    path.unlink(missing_ok=True)
    path.with_suffix(".pub").unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


def _ensure_user(user: str, home: Path) -> pwd.struct_passwd:
    try:
        pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "--shell", "/bin/bash", user], check=True)
    # "*": no password, but not locked (sshd without PAM refuses locked accounts, even with keys).
    subprocess.run(["usermod", "--home", str(home), "--password", "*", user], check=True)
    entry = pwd.getpwnam(user)
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    return entry


@dataclass
class SshHost:
    """One builder host: an sshd on ``address:port`` that lets ``user`` in with ``key_file``."""

    address: str
    port: int
    user: str
    home: Path
    key_file: Path
    host_key: str
    folder: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def config(self) -> Path:
        return self.folder / "sshd_config"

    def endpoint(self) -> Endpoint:
        return Endpoint(self.address, self.port, self.user, str(self.key_file), self.host_key)

    def start(self) -> None:
        """Start sshd (again) on the same address, port and keys; no-op while it runs."""
        if self.process is not None and self.process.poll() is None:
            return
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)],
                                        stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection((self.address, self.port), timeout=1):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sshd on {self.address}:{self.port} did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Kill sshd and every session it started for this host's user."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        subprocess.run(["pkill", "-KILL", "-u", self.user], check=False)

    def new_host_key(self) -> None:
        """Restart with another host key, as a reinstalled (or impersonated) machine would."""
        self.stop()
        shutil.copy(self.folder / "host_key", self.folder / "host_key.orig")
        _keygen(self.folder / "host_key", "new")
        self.start()

    def restore_host_key(self) -> None:
        self.stop()
        shutil.copy(self.folder / "host_key.orig", self.folder / "host_key")
        self.start()

    def write_file(self, path: Path, text: str, mode: int = 0o644) -> None:
        """A file owned by the host's user."""
        entry = pwd.getpwnam(self.user)
        path.write_text(text)
        path.chmod(mode)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def start_ssh_host(root: Path, address: str, user: str, *, admit_root: bool = False) -> SshHost:
    """A new sshd host for ``user`` on ``address`` (any 127.x.y.z), started and ready.

    With ``admit_root``, root may log in too with the same client key (Ansible converges as
    root), and ``user`` also with the keys in its own ``~/.ssh/authorized_keys``.
    """
    folder = root / f"sshd-{address}"
    folder.mkdir(parents=True, exist_ok=True)
    home = root / "home" / user
    home.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    os.chmod(home.parent, 0o755)
    entry = _ensure_user(user, home)
    host_key = _keygen(folder / "host_key", f"host {address}")
    client_key = folder / "client_key"
    public = _keygen(client_key, f"client of {address}")
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    keys = folder / "keys"
    keys.mkdir(exist_ok=True)
    for who in (user, "root"):
        (keys / who).write_text(public + "\n")
    os.chown(ssh_dir, entry.pw_uid, entry.pw_gid)
    port = _free_port(address)
    (folder / "sshd_config").write_text(
        f"""ListenAddress {address}:{port}
HostKey {folder / "host_key"}
PidFile {folder / "sshd.pid"}
AuthorizedKeysFile {keys}/%u .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowUsers {user}{" root" if admit_root else ""}
PermitRootLogin {"prohibit-password" if admit_root else "no"}
MaxSessions 100
MaxStartups 100
Subsystem sftp internal-sftp
"""
    )
    host = SshHost(address, port, user, home, client_key, host_key, folder)
    host.start()
    return host


@contextmanager
def ssh_hosts(prefix: str, hosts: list[tuple[str, str]]) -> Iterator[list[SshHost]]:
    """sshd hosts for (address, user) pairs, stopped and removed at the end."""
    # Not under pytest's temp folder: that is private to root, and the builders' users need in.
    root = Path(tempfile.mkdtemp(prefix=prefix))
    started: list[SshHost] = []
    try:
        started += [start_ssh_host(root, address, user) for address, user in hosts]
        yield started
    finally:
        for host in started:
            host.stop()
        shutil.rmtree(root, ignore_errors=True)
