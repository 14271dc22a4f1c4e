"""The only code that speaks SSH (paramiko) or runs rsync: connections to builders, checked keys.

paramiko is used directly because Fabric gets in the way of each thing a farm needs from SSH:
``fabric.Connection`` trusts any host key (``AutoAddPolicy``) and reads ``~/.ssh/config``; its
``env=`` values reach the remote shell unquoted; and every ``run()`` goes through invoke's
runner, with threads per command, 10 ms polling and our own stdin read by default. Many short
commands on one kept-open connection, from several threads, is what paramiko's channels give.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import select
import shlex
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import paramiko

from ..errors import PiwheelsError
from ..files import atomic_file

REMOTE_DIR = re.compile(r"^/[A-Za-z0-9._+-]+(/[A-Za-z0-9._+-]+)*/?$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class TransportError(PiwheelsError):
    """A builder could not be reached or dropped us: names the builder and the cause."""


class HostKeyError(TransportError):
    """A builder's host key is unknown or not the one recorded."""


@dataclass(frozen=True)
class Endpoint:
    """How to reach a builder, and the host key it must show."""

    host: str
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    host_key: str | None = None  # "TYPE BASE64"

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str


def fingerprint(host_key: str) -> str:
    """The SHA256 fingerprint of a "TYPE BASE64" key, as ssh-keygen -l shows it."""
    blob = base64.b64decode(host_key.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _key_text(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


def _socket(endpoint: Endpoint, timeout: float) -> socket.socket:
    try:
        sock = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout)
    except OSError as exc:
        raise TransportError(f"{endpoint.label}: cannot connect: {exc}") from None
    # Without it every small command waits ~40 ms for delayed ACKs (Nagle).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def scan_host_key(host: str, port: int, *, timeout: float = 10.0) -> str:
    """The host key a server offers, "TYPE BASE64", for trust on first use."""
    import paramiko  # on first use: a farm of only the local builder never pays for it

    endpoint = Endpoint(host, port)
    transport = paramiko.Transport(_socket(endpoint, timeout))
    try:
        transport.start_client(timeout=timeout)
        return _key_text(transport.get_remote_server_key())
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise TransportError(f"{endpoint.label}: no SSH server answered: {exc}") from None
    finally:
        transport.close()


def _expected_key(endpoint: Endpoint) -> paramiko.PKey:
    import paramiko

    if not endpoint.host_key:
        raise HostKeyError(f"{endpoint.label}: host key unknown: use --trust-host-key or --host-key")
    try:
        key_type, data = endpoint.host_key.split()[:2]
        return paramiko.PKey.from_type_string(key_type, base64.b64decode(data))
    except (ValueError, paramiko.SSHException) as exc:
        raise HostKeyError(f"{endpoint.label}: recorded host key is not valid: {exc}") from None


class Connection:
    """One SSH connection to a builder, reused across jobs.

    Thread-safe: several jobs may run commands at once, each on its own channel (sshd's
    MaxSessions, 10 by default, must allow a builder's slots). A command past its time limit has
    its channel closed; one that keeps writing then dies, a silent one may run on: the agent
    kills its own build's process group at the build's time limit, so none outlives that.
    """

    def __init__(self, endpoint: Endpoint, *, connect_timeout: float = 10.0) -> None:
        import paramiko

        self.endpoint = endpoint
        expected = _expected_key(endpoint)
        sock = _socket(endpoint, connect_timeout)
        self.socket = sock
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.get_host_keys().add(endpoint.known_hosts_name, expected.get_name(), expected)
        try:
            client.connect(
                endpoint.host,
                port=endpoint.port,
                username=endpoint.user,
                key_filename=endpoint.key_file,
                sock=sock,
                timeout=connect_timeout,
                banner_timeout=connect_timeout,
                auth_timeout=connect_timeout,
                allow_agent=False,
                look_for_keys=endpoint.key_file is None,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyError(
                f"{endpoint.label}: host key changed: it offers {fingerprint(_key_text(exc.key))}, "
                f"recorded is {fingerprint(_key_text(expected))}; if the change is expected, "
                "remove and add the builder again"
            ) from None
        except paramiko.SSHException as exc:
            client.close()
            raise TransportError(f"{endpoint.label}: SSH failed: {exc}") from None
        except (OSError, EOFError) as exc:
            client.close()
            raise TransportError(f"{endpoint.label}: SSH failed: {exc}") from None
        self.client = client
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(15)
        self.transport = transport

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    @staticmethod
    def command_line(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
        """The shell text of ``argv`` with ``env``: every word and every value quoted."""
        words = []
        for name, value in (env or {}).items():
            if not ENV_NAME.match(name):
                raise ValueError(f"{name!r}: not an environment variable name")
            words.append(f"{name}={shlex.quote(value)}")
        return " ".join(words + [shlex.quote(arg) for arg in argv])

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult:
        """Run ``argv`` on the builder; TransportError if the connection fails or time runs out.

        The command's stdin is the builder's ``/dev/null``, so nothing is ever sent on the channel:
        paramiko sends an EOF outside the channel's lock, and one that crosses the close of a
        command that already ended reaches sshd after the channel is gone, which makes sshd drop
        the whole connection, every slot's command with it (paramiko issues 1115 and 1705).
        """
        import paramiko

        label = self.endpoint.label
        deadline = time.monotonic() + timeout
        try:
            chan = self.transport.open_session(timeout=min(timeout, 30.0))
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(f"{label}: cannot open a channel: {exc}") from None
        out: list[bytes] = []
        err: list[bytes] = []
        try:
            chan.exec_command(f"{self.command_line(argv, env)} </dev/null")
            while True:
                while chan.recv_ready():
                    out.append(chan.recv(1 << 16))
                while chan.recv_stderr_ready():
                    err.append(chan.recv_stderr(1 << 16))
                # The exit status may come before the last output: wait for the end of the data too.
                drained = not chan.recv_ready() and not chan.recv_stderr_ready()
                if chan.exit_status_ready() and chan.eof_received and drained:
                    break
                if not self.transport.is_active() or (chan.closed and not chan.exit_status_ready()):
                    raise TransportError(f"{label}: connection dropped during {argv[0]!r}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TransportError(f"{label}: {argv[0]!r} did not finish within {timeout:.0f} s")
                select.select([chan], [], [], min(left, 1.0))
            code = chan.recv_exit_status()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(f"{label}: connection failed during {argv[0]!r}: {exc}") from None
        finally:
            chan.close()
        return CommandResult(
            code, b"".join(out).decode("utf-8", "replace"), b"".join(err).decode("utf-8", "replace")
        )

    def put(self, data: bytes, remote_path: str, mode: int = 0o644) -> None:
        """Write ``data`` to ``remote_path`` on the builder, under a temp name first, then renamed."""
        import paramiko

        temp = f"{remote_path}.tmp-{os.getpid()}-{threading.get_ident()}"
        try:
            with self.client.open_sftp() as sftp:
                with sftp.open(temp, "wb") as f:
                    f.write(data)
                sftp.chmod(temp, mode)
                sftp.posix_rename(temp, remote_path)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(f"{self.endpoint.label}: cannot write {remote_path}: {exc}") from None


def write_known_hosts(path: Path, endpoints: Iterable[Endpoint]) -> None:
    """The known_hosts file that rsync's ssh checks the builders' keys against."""
    lines = sorted({f"{e.known_hosts_name} {e.host_key}\n" for e in endpoints if e.host_key})
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        f.write("".join(lines).encode())


def _control_dir() -> Path:
    """A folder only this user can enter, short enough for the sockets of ssh's master connections."""
    folder = Path(tempfile.gettempdir()) / f"piwheels-ssh-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    if folder.stat().st_uid != os.getuid() or folder.stat().st_mode & 0o077:
        raise TransportError(f"{folder}: not a private folder of this user; remove it")
    return folder


def rsync_pull(
    endpoint: Endpoint, remote_dir: str, local_dir: Path, *, timeout: float, known_hosts: Path
) -> None:
    """Copy the regular files of ``remote_dir`` on the builder into ``local_dir``.

    Interrupted transfers resume from ``.rsync-partial`` and never leave a partial file under
    its final name; symlinks are not copied; the builder's key is checked against ``known_hosts``.
    """
    if not REMOTE_DIR.match(remote_dir) or "/../" in f"{remote_dir}/" or "/./" in f"{remote_dir}/":
        raise TransportError(f"{endpoint.label}: refusing remote folder {remote_dir!r}")
    # %C covers host, port and user; the key and the known_hosts file must match too, or a
    # second controller would ride on a connection whose host key it never checked itself.
    scope = hashlib.sha256(f"{known_hosts}\0{endpoint.key_file}".encode()).hexdigest()[:12]
    ssh = ["ssh", "-p", str(endpoint.port), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
           "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
           "-o", f"ConnectTimeout={max(1, int(timeout))}",
           # One master connection per builder, kept for a minute: a transfer then costs no
           # key exchange, which is most of the controller's work per job.
           "-o", "ControlMaster=auto", "-o", f"ControlPath={_control_dir()}/{scope}-%C",
           "-o", "ControlPersist=60"]  # fmt: skip
    if endpoint.key_file:
        ssh += ["-i", endpoint.key_file, "-o", "IdentitiesOnly=yes"]
    target = f"{endpoint.user}@{endpoint.host}" if endpoint.user else endpoint.host
    command = [
        "rsync", "-rt", "--partial-dir=.rsync-partial", "--protect-args", f"--timeout={max(1, int(timeout))}",
        "-e", shlex.join(ssh), f"{target}:{remote_dir.rstrip('/')}/", f"{local_dir}/",
    ]  # fmt: skip
    local_dir.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False
        )
    except subprocess.TimeoutExpired:
        raise TransportError(f"{endpoint.label}: rsync of {remote_dir} took over {timeout:.0f} s") from None
    if done.returncode != 0:
        raise TransportError(f"{endpoint.label}: rsync of {remote_dir} failed: {done.stderr.strip()[-500:]}")
