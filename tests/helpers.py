"""Running the real ``piwheels-ctl`` command and looking at what it left behind."""

from __future__ import annotations

import hashlib
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from piwheels_ctl.publish.server import make_server

PIWHEELS = Path(sys.executable).with_name("piwheels-ctl")


# A fresh Debian's interpreter: a venv made from it has Debian's own pip (bookworm: 23.0.1, the
# pip of Raspberry Pi OS bookworm). The clients the tests install with stand for a user's pip.
DEBIAN_PYTHON = "/usr/bin/python3"


def debian_venv(path: Path, *, with_pip: bool = True) -> Path:
    """A venv of Debian's ``/usr/bin/python3`` (with Debian's pip unless told otherwise); its python."""
    args = [DEBIAN_PYTHON, "-m", "venv", *([] if with_pip else ["--without-pip"]), str(path)]
    subprocess.run(args, check=True)
    return path / "bin" / "python"


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without our own variables, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIWHEELS_")}
    env.update(settings)
    return env


def piwheels(
    env: Mapping[str, str], *args: str, check: bool = True, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``piwheels-ctl`` with ``args``; fail the test on a non-zero exit if ``check``."""
    proc = subprocess.run(
        [str(PIWHEELS), *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"piwheels-ctl {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def tree_snapshot(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` with the sha256 of its content."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def sqlite_dump(path: Path) -> list[str]:
    """The SQL text of a SQLite database, to compare its state before and after."""
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


@contextmanager
def serving(www: Path) -> Iterator[str]:
    """``piwheels-ctl serve``'s server on ``www`` in a thread; its base URL (no trailing slash)."""
    server = make_server(www, "127.0.0.1", 0)
    # A short poll interval keeps shutdown() (and so each test's teardown) quick.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def running(token: str) -> list[str]:
    """Live processes (not zombies) whose command line contains ``token``: "pid: command"."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if token in cmdline and state != "Z" and entry.name != str(os.getpid()):
            found.append(f"{entry.name}: {cmdline}")
    return found


def wait_gone(token: str, timeout: float = 30.0) -> list[str]:
    """Wait until no process with ``token`` runs; what still runs after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := running(token)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def play_recap(output: str) -> dict[str, dict[str, int]]:
    """ansible-playbook's PLAY RECAP counts per host: {"b1": {"ok": 9, "changed": 0, ...}}."""
    recap = {}
    for line in output.split("PLAY RECAP")[-1].splitlines()[1:]:
        if ":" in line:
            host, counts = line.split(":", 1)
            recap[host.strip()] = {k: int(v) for k, v in (pair.split("=") for pair in counts.split())}
    return recap
