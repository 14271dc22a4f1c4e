"""sshd inside a cached Debian root, on a loopback address of its own, over an overlay of the root.

The root is the lower layer of an overlay in a mount namespace of sshd's own (its changes go to a
folder of the test's), so that the cached root, shared with other tests and CI, is never
modified. Used by the ARM tier (emulated roots, tests/test_arm.py) and the cross builder's farm
test (tests/test_cross_ssh.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from debian_roots import UID_LOCKS

CONFIG_DIR = "/etc/ssh/piwheels-test"  # inside the root: its sshd's keys and config
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
BUILDER_USER = "piwheels"  # the role's default build user


def keygen(path: Path, comment: str) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)  # fmt: skip
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


@dataclass
class ArmHost:
    """sshd inside a root (emulated or not), on ``address:port``, admitting root with ``key_file``."""

    address: str
    port: int
    key_file: Path
    process: subprocess.Popen[bytes]
    log: Path

    def ssh(
        self, command: str, *, user: str = "root", timeout: float = 900
    ) -> subprocess.CompletedProcess[str]:
        argv = [
            "ssh", "-i", str(self.key_file), "-p", str(self.port), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
            f"{user}@{self.address}", command,
        ]  # fmt: skip
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def put(self, local: Path, remote: str) -> None:
        with open(local, "rb") as source:
            argv = ["ssh", "-i", str(self.key_file), "-p", str(self.port), "-o", "StrictHostKeyChecking=no",
                    "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", f"root@{self.address}",
                    f"cat > {remote}"]  # fmt: skip
            subprocess.run(argv, stdin=source, check=True, timeout=300)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)


def start_arm_host(base: Path, root: Path, address: str) -> ArmHost:
    """sshd of the root on ``address`` over an overlay of it (changes go to ``base``), in a
    clean environment."""
    upper, work, merged = base / "upper", base / "overlay-work", base / "merged"
    config = upper / CONFIG_DIR.lstrip("/")
    for folder in (work, merged, config / "keys", upper / "run" / "sshd", upper / "etc" / "ssl" / "certs"):
        folder.mkdir(parents=True, exist_ok=True)
    # The host's CA certificates, so that whatever the builder fetches over TLS is checked as here.
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", upper / "etc" / "ssl" / "certs" / "ca-certificates.crt")
    keygen(config / "host_key", f"host {address}")
    key_file = base / "root_key"
    (config / "keys" / "root").write_text(keygen(key_file, "ansible") + "\n")
    with socket.socket() as s:
        s.bind((address, 0))
        port = s.getsockname()[1]
    (config / "sshd_config").write_text(
        f"ListenAddress {address}:{port}\nHostKey {CONFIG_DIR}/host_key\nPidFile /run/sshd-test.pid\n"
        f"AuthorizedKeysFile {CONFIG_DIR}/keys/%u .ssh/authorized_keys\nPasswordAuthentication no\n"
        "ChallengeResponseAuthentication no\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
        f"AllowUsers root {BUILDER_USER}\nMaxSessions 100\nMaxStartups 100\nSubsystem sftp internal-sftp\n"
    )
    os.makedirs(UID_LOCKS, mode=0o700, exist_ok=True)
    script = " && ".join([
        f"mount -t overlay overlay -o lowerdir={root},upperdir={upper},workdir={work} {merged}",
        f"mount -t proc proc {merged}/proc",
        f"mount --rbind /dev {merged}/dev",
        f"mkdir -p {merged}{UID_LOCKS}",
        # Build uids are the machine's: builds inside and outside never take one uid.
        f"mount --bind {UID_LOCKS} {merged}{UID_LOCKS}",
        f"exec chroot {merged} env -i PATH={PATH} LANG=C.UTF-8 "
        f"/usr/sbin/sshd -D -e -f {CONFIG_DIR}/sshd_config",
    ])  # fmt: skip
    log = base / "sshd.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
        )  # fmt: skip
    host = ArmHost(address, port, key_file, process, log)
    deadline = time.monotonic() + 120  # emulated: sshd takes seconds to start
    while True:
        try:
            with socket.create_connection((address, port), timeout=2):
                return host
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                host.stop()
                raise RuntimeError(
                    f"the sshd of {root.name} did not start:\n{log.read_text()[-2000:]}"
                ) from None
            time.sleep(0.5)


def write_emulated_farm_config(base: Path, upstream_url: str) -> Path:
    """The controller's config of a farm whose builders are emulated or reached over SSH only:
    data in ``base``, no local builder, limits that suit qemu-user."""
    config = base / "piwheels.toml"
    config.write_text(
        f'data_dir = "{base}/data"\nupstream = "{upstream_url}"\nlocal_builder = false\n'
        # qemu-user reserves the 32-bit guest's address space up front: RLIMIT_AS would stop it.
        "build_memory_mb = 0\nbuild_timeout = 3600\nmin_free_mb = 100\ncommand_timeout = 600\n"
        "connect_timeout = 60\n"
    )
    return config
