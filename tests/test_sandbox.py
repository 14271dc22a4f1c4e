"""Every wall of a build's sandbox, climbed for real by a hostile build.

The "build" here is a shell script standing in for ``python -m pip wheel`` (a fake interpreter,
named as such): it runs inside the real sandbox exactly as a setup.py would, so each test is the
attack itself. Real pip builds of hostile sdists run in ``test_pipeline.py`` and ``test_hostile.py``.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.server
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from piwheels_ctl.agent import agent, buildstep, compilers, sandbox
from piwheels_ctl.agent.jobspec import request

from helpers import running, wait_gone

AGENT = Path(agent.__file__)
SYSTEM_PYTHON = "/usr/bin/python3"  # in the sandbox's /usr, unlike this venv's interpreter
BUILD_UIDS = range(sandbox.BUILD_UIDS[0], sum(sandbox.BUILD_UIDS))


def _fake_python(tmp_path: Path, body: str) -> str:
    """A fake interpreter (a shell script) whose ``-m pip wheel ...`` runs ``body`` instead.

    Anything else (the sandbox's network relay, ``-E -s -c ...``) goes to the system's Python.
    """
    script = tmp_path / "fake" / "bin" / "python"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(f'#!/bin/sh\n[ "$1" = "-m" ] || exec {SYSTEM_PYTHON} "$@"\n{body}\n')
    script.chmod(0o755)
    return str(script)


def _build(tmp_path: Path, python: str, **kwargs: object) -> dict[str, object]:
    return buildstep.build(request(
        python, "demo", "1.0", str(tmp_path / "outbox"), str(tmp_path / "build.log"), str(tmp_path / "work"),
        **kwargs,
    ))  # fmt: skip


def _log(tmp_path: Path) -> str:
    return (tmp_path / "build.log").read_text(errors="replace")


def _uid_in(log: str) -> int:
    """The uid the build printed with ``id -u`` (the last number alone on a line)."""
    return int([line for line in log.splitlines() if line.strip().isdigit()][-1])


def test_this_machine_has_the_bubblewrap_sandbox() -> None:
    kind, why = sandbox.choose("auto")
    assert kind == "bwrap", why


def test_a_build_sees_nothing_of_the_farm_and_writes_only_its_own_folder(tmp_path: Path) -> None:
    farm = tmp_path / "farm"
    secrets = {
        farm / "piwheels.db": "the database",
        farm / "www" / "simple" / "other" / "other-1.0-py3-none-any.whl": "another project's wheel",
        farm / "keys" / "id_ed25519": "the controller's key",
        tmp_path / "work" / "build-someone-else" / "build" / "secret": "another build's folder",
    }
    for path, text in secrets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    other_build = open(tmp_path / "work" / "build-someone-else" / ".lock", "w")  # noqa: SIM115
    fcntl.flock(other_build, fcntl.LOCK_EX)  # a build in progress: not swept away
    # Writes are tried on the test's own files only: a broken sandbox must not harm the machine.
    unreadable = [*secrets, AGENT, Path("/root/.bashrc"), Path("/etc/shadow"), Path("/etc/ssh")]
    probes = "\n".join(
        [
            f'if cat "{t}" >/dev/null 2>&1 || ls "{t}" >/dev/null 2>&1; then echo "READ {t}"; fi'
            for t in unreadable
        ]
        + [f'if echo owned >> "{t}" 2>/dev/null; then echo "WROTE {t}"; fi' for t in secrets]
    )
    body = f'{probes}\necho ok > "$HOME/mine" && echo "HOME WRITABLE"\nid -u'
    result = _build(tmp_path, _fake_python(tmp_path, body))
    log = _log(tmp_path)
    assert "READ" not in log and "WROTE" not in log, log
    assert "HOME WRITABLE" in log, log
    assert _uid_in(log) in BUILD_UIDS, f"not a build uid of its own: {log}"
    for path, text in secrets.items():
        assert path.read_text() == text, f"{path} changed"
    other_build.close()
    assert result["sandbox"] == "bwrap"


def test_nothing_outlives_a_build_daemons_and_signal_ignorers_included(tmp_path: Path) -> None:
    token = "1000.0417"
    body = (
        f"setsid sh -c 'sleep {token} & sleep {token}' &\n"  # double fork, own session
        f"sh -c 'trap \"\" TERM HUP; sleep {token}' &\n"
        "exit 0"
    )
    result = _build(tmp_path, _fake_python(tmp_path, body))
    assert result["status"] == "failed"  # no wheel
    assert wait_gone(token) == []
    assert list((tmp_path / "work").glob("build-*")) == [], "the work folder was not removed"


def test_the_time_limit_ends_a_build_that_ignores_sigterm(tmp_path: Path) -> None:
    token = "1000.0923"
    body = f"trap '' TERM; sleep {token} & wait; sleep {token}"
    started = time.monotonic()
    result = _build(tmp_path, _fake_python(tmp_path, body), timeout=2.0)
    assert result["timed_out"] is True, result
    assert time.monotonic() - started < 60
    assert wait_gone(token) == []


def test_a_killed_agent_leaves_no_process_and_its_folder_is_swept(tmp_path: Path) -> None:
    token = "1000.1311"
    python = _fake_python(tmp_path, f"setsid sh -c 'sleep {token}' & echo started; sleep {token}")
    work = tmp_path / "work"
    agent_proc = subprocess.Popen(
        [sys.executable, str(AGENT), "build", "--python", python, "--name", "demo", "--version", "1.0",
         "--outbox", str(tmp_path / "outbox"), "--log", str(tmp_path / "build.log"),
         "--work-root", str(work)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while "started" not in (_log(tmp_path) if (tmp_path / "build.log").exists() else ""):
        assert time.monotonic() < deadline and agent_proc.poll() is None, "the build never started"
        time.sleep(0.05)
    assert running(token), "the build's processes should run now"
    agent_proc.send_signal(signal.SIGKILL)
    agent_proc.wait()
    assert wait_gone(token) == [], "the build outlived its agent"
    assert list(work.glob("build-*")), "the killed agent's folder is there until the next build"
    _build(tmp_path, _fake_python(tmp_path, "exit 1"))
    assert list(work.glob("build-*")) == [], "the next build did not sweep the dead build's folder"


def test_memory_is_limited_for_the_whole_process_tree(tmp_path: Path) -> None:
    # Four children of 300 MB each: every one is under the 1000 MB limit, together they are not.
    child = f"{SYSTEM_PYTHON} -c 'import time; x = bytearray(300 * 1024 * 1024); time.sleep(60)'"
    body = "\n".join([f"{child} &"] * 4) + "\nwait"
    result = _build(tmp_path, _fake_python(tmp_path, body), memory_mb=1000)
    assert result["limit"] == "memory", (result, _log(tmp_path))
    assert "more than its 1000 MB" in _log(tmp_path)
    assert wait_gone("import time; x = bytearray") == []


BOMB = (
    "import os, time\n"
    "while True:\n"
    "    try:\n"
    "        if os.fork() == 0:\n"
    "            time.sleep(60)\n"
    "            os._exit(0)\n"
    "    except OSError:\n"
    "        time.sleep(0.001)\n"
)


@pytest.mark.parametrize("bomb", ["python", "shell"])
def test_a_fork_bomb_ends_as_a_failure(tmp_path: Path, bomb: str) -> None:
    # The Python bomb keeps forking; the shell one collapses once forks fail (RLIMIT_NPROC).
    body = "id -u\n" + (
        f"{SYSTEM_PYTHON} -c '{BOMB}'" if bomb == "python" else "bomb() { bomb | bomb & }; bomb; sleep 5"
    )
    started = time.monotonic()
    result = _build(tmp_path, _fake_python(tmp_path, body), max_procs=64, timeout=120)
    assert result["status"] == "failed", (result, _log(tmp_path)[-500:])
    if bomb == "python":
        assert result["limit"] == "processes", (result, _log(tmp_path)[-500:])
    assert time.monotonic() - started < 100
    uid = int(_log(tmp_path).splitlines()[1])  # what `id -u` printed, after the command line
    assert uid in BUILD_UIDS
    deadline = time.monotonic() + 30  # the kernel may still be tearing the namespace down
    while (left := _processes_of(uid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == [], f"processes of the build's uid {uid} are left: {left}"


def _processes_of(uid: int) -> list[str]:
    """Live processes (not zombies waiting for this machine's init) owned by ``uid``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and proc.stat().st_uid == uid:
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(f"{proc.name} ({state})")
        except (OSError, IndexError):
            continue
    return found


def test_the_log_is_cut_while_it_is_written(tmp_path: Path) -> None:
    log_max = 100_000
    body = "echo FIRST-LINE; head -c 50000000 /dev/zero | tr '\\0' x; echo; echo LAST-LINE"
    biggest = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal biggest
        while not stop.is_set():
            with contextlib.suppress(FileNotFoundError):
                biggest = max(biggest, (tmp_path / "build.log").stat().st_size)
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        _build(tmp_path, _fake_python(tmp_path, body), log_max_bytes=log_max)
    finally:
        stop.set()
        watcher.join()
    log = _log(tmp_path)
    assert biggest <= log_max + 1000, f"the log reached {biggest} bytes on disk"
    assert "FIRST-LINE" in log and "LAST-LINE" in log and "bytes cut by piwheels-ctl" in log


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello from the host\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def two_servers() -> Iterator[tuple[str, str]]:
    """Two HTTP servers on this machine's loopback: the build's index, and something else."""
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello) for _ in range(2)]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    try:
        yield tuple(f"http://127.0.0.1:{s.server_address[1]}/" for s in servers)  # type: ignore[misc]
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()


def test_a_build_reaches_its_index_and_nothing_else_on_this_machine(
    tmp_path: Path, two_servers: tuple[str, str]
) -> None:
    index, other = two_servers
    port = other.rsplit(":", 1)[1].strip("/")
    fetch = (
        f"{SYSTEM_PYTHON} -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read())'"
    )
    direct = f"{SYSTEM_PYTHON} -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}))'"
    body = (
        f'{fetch} "{index}" && echo INDEX-OK\n'
        f'{fetch} "{other}" && echo OTHER-REACHED\n'
        f"{direct} 2>/dev/null && echo DIRECT-REACHED\n"
        "exit 1"
    )
    result = _build(tmp_path, _fake_python(tmp_path, body), index_url=index)
    log = _log(tmp_path)
    assert "INDEX-OK" in log and "hello from the host" in log, log
    assert "OTHER-REACHED" not in log and "DIRECT-REACHED" not in log, log
    assert result["network"] == [
        f"127.0.0.1:{port}: refused, not a host builds may reach (build_network_allow)"
    ], result


def test_the_uid_fallback_is_a_sandbox_too(tmp_path: Path) -> None:
    secret = tmp_path / "farm" / "piwheels.db"
    secret.parent.mkdir()
    secret.write_text("the database")
    # The fallback has no mount namespace: the build's uid must be able to reach its folder and
    # interpreter, and the farm's folders are private (pytest's own temp folders are root's only).
    public = Path(tempfile.mkdtemp(prefix="piwheels-user-kind-"))
    public.chmod(0o711)
    token = "1000.2027"
    body = f'cat "{secret}" && echo READ\nid -u\nsetsid sh -c "sleep {token}" &\nexit 0'
    try:
        result = _build(public, _fake_python(public, body), sandbox_kind="user")
        log = _log(public)
    finally:
        shutil.rmtree(public)
    assert result["sandbox"] == "user"
    assert "READ" not in log and _uid_in(log) in BUILD_UIDS, log
    assert wait_gone(token) == []


def test_without_bubblewrap_root_falls_back_and_bwrap_alone_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox, "BWRAP", str(tmp_path / "no-bwrap-here"))
    assert sandbox.choose("auto")[0] == "user"
    result = _build(tmp_path, _fake_python(tmp_path, "exit 0"), sandbox_kind="bwrap")
    assert result["status"] == "error" and "bwrap not found" in str(result["error"]), result


def test_probe_names_the_sandbox() -> None:
    out = subprocess.run([sys.executable, str(AGENT), "probe"], capture_output=True, check=True).stdout
    assert json.loads(out)["sandbox"] == "bubblewrap namespaces (a uid of its own)"


def test_two_builds_of_one_project_at_once_do_not_fight_over_its_compiler_cache(tmp_path: Path) -> None:
    ccache = tmp_path / "ccache"
    body = 'echo "CCACHE_DIR=${CCACHE_DIR:-none}"; touch "${CCACHE_DIR:-$HOME}/mine" && echo WROTE; sleep 2'
    results: list[dict[str, object]] = []

    def one(n: int) -> None:
        place = tmp_path / str(n)
        results.append(_build(place, _fake_python(place, body), ccache_dir=str(ccache)))

    threads = [threading.Thread(target=one, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    logs = [_log(tmp_path / str(n)) for n in range(2)]
    assert all("WROTE" in log for log in logs), logs
    caches = {line for log in logs for line in log.splitlines() if line.startswith("CCACHE_DIR=")}
    assert caches == {"CCACHE_DIR=none", f"CCACHE_DIR={ccache}/projects/demo"}, caches


@pytest.mark.parametrize(
    "trap",
    [
        'mkdir -p "$CCACHE_DIR/0/0" && mkfifo "$CCACHE_DIR/0/0/stats"',  # ccache waits for a writer
        'mkdir -p "$CCACHE_DIR/0/0" && ln -s /dev/zero "$CCACHE_DIR/0/0/stats"',  # endless bytes
    ],
)
def test_a_trap_in_the_projects_compiler_cache_costs_the_agent_a_time_limit_at_most(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trap: str
) -> None:
    """The agent reads the statistics of a cache the project's builds write (as root, in some
    modes): within a time and a memory limit, the build's outcome its own."""
    monkeypatch.setattr(compilers, "STATS_TIMEOUT", 3)
    ccache = tmp_path / "ccache"
    results: list[dict[str, object]] = []
    python = _fake_python(tmp_path, f"{trap} && echo TRAPPED; exit 1")
    worker = threading.Thread(target=lambda: results.append(_build(tmp_path, python, ccache_dir=str(ccache))))
    worker.start()
    worker.join(timeout=300)
    assert not worker.is_alive(), "the agent hangs on its compiler cache's statistics"
    assert "TRAPPED" in _log(tmp_path), _log(tmp_path)
    assert results[0]["status"] == "failed" and results[0]["ccache"] is None, results
    # The project's next build reads the same trap before it starts: it builds all the same.
    again = _build(
        tmp_path / "again", _fake_python(tmp_path / "again", "echo AGAIN; exit 1"), ccache_dir=str(ccache)
    )
    assert again["status"] == "failed" and "AGAIN" in _log(tmp_path / "again"), again


def test_a_wheel_under_a_name_no_wheel_has_is_not_collected(tmp_path: Path) -> None:
    # Not ASCII: Python 2.7's agent could not even report it (its JSON takes no such bytes).
    body = (
        'while [ $# -gt 0 ]; do [ "$1" = "--wheel-dir" ] && out="$2"; shift; done\n'
        'echo wheel > "$out/$(printf "demo-1.0-py3-none-any\\377.whl")"; echo MADE; exit 0'
    )
    result = _build(tmp_path, _fake_python(tmp_path, body))
    assert "MADE" in _log(tmp_path), _log(tmp_path)
    assert result["status"] == "failed" and result["files"] == [], result


def test_a_build_filling_the_disk_through_its_cache_loses_the_cache_not_the_builder(
    tmp_path: Path,
) -> None:
    """The project's caches outlive its build: filled with junk, they would leave the disk full
    for every later build of every project, and the builder out of service."""
    ccache = tmp_path / "ccache"
    work = tmp_path / "work"
    work.mkdir()
    free_mb = shutil.disk_usage(work).free >> 20
    body = 'dd if=/dev/zero of="$CCACHE_DIR/junk" bs=1M count=400 2>/dev/null && echo FILLED; exit 1'
    result = _build(tmp_path, _fake_python(tmp_path, body), ccache_dir=str(ccache), min_free_mb=free_mb - 200)
    assert "FILLED" in _log(tmp_path), _log(tmp_path)
    assert result["status"] == "failed", result
    assert not (ccache / "projects" / "demo" / "junk").exists()
    other = tmp_path / "other"
    python = _fake_python(other, "echo OTHER; exit 1")
    again = buildstep.build(request(
        python, "other", "1.0", str(other / "outbox"), str(other / "build.log"), str(work),
        ccache_dir=str(ccache), min_free_mb=free_mb - 200,
    ))  # fmt: skip
    assert again["status"] == "failed", again


def test_a_hard_link_left_in_a_projects_cache_is_not_given_to_the_next_build(tmp_path: Path) -> None:
    """Where the kernel lets a build link a file it cannot write (no protected_hardlinks: the
    old kernels the uid fallback is for), the agent's giving the cache to the next build's uid
    must not give that file too. The link is made here, as such a build would have made it."""
    public = Path(tempfile.mkdtemp(prefix="piwheels-hardlink-"))
    public.chmod(0o711)
    try:
        secret = public / "root-only"
        secret.write_text("root's")
        secret.chmod(0o600)
        cache = public / "ccache" / "projects" / "demo"
        cache.mkdir(parents=True)
        (cache / "stolen").hardlink_to(secret)
        (cache / "mine").write_text("an earlier build's")
        result = _build(public, _fake_python(public, "id -u; exit 1"), sandbox_kind="user",
                        ccache_dir=str(public / "ccache"))  # fmt: skip
        uid = _uid_in(_log(public))
        assert result["status"] == "failed" and uid in BUILD_UIDS, result
        assert secret.stat().st_uid == 0, f"the root-owned file was given to uid {secret.stat().st_uid}"
        assert (cache / "mine").stat().st_uid == uid  # the rest of the cache is the build's
    finally:
        shutil.rmtree(public)
