"""The SSH transport against a real sshd on loopback: quoting, time limits, host keys, rsync."""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from piwheels_ctl.farm.agentcall import agent_files
from piwheels_ctl.farm.transport import (
    Connection,
    HostKeyError,
    TransportError,
    fingerprint,
    rsync_pull,
    scan_host_key,
    write_known_hosts,
)

from sshd import SshHost, start_ssh_host

AWKWARD = ["a b", "it's", '"quoted"', "$(touch /tmp/pwned-by-test)", "; rm -rf /", "new\nline", "*", "~"]


@pytest.fixture(scope="module")
def host() -> Iterator[SshHost]:
    root = Path(tempfile.mkdtemp(prefix="piwheels-transport-"))
    started = start_ssh_host(root, "127.0.0.5", "pwtransport")
    try:
        yield started
    finally:
        started.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def conn(host: SshHost) -> Iterator[Connection]:
    host.start()
    with Connection(host.endpoint(), connect_timeout=5) as connection:
        yield connection


def test_arguments_and_environment_reach_the_command_unread_by_the_shell(conn: Connection) -> None:
    script = "import os, sys, json; print(json.dumps([sys.argv[1:], os.environ['ODD']]))"
    done = conn.run(["python3", "-c", script, *AWKWARD], env={"ODD": "$(id) `id` ; x"}, timeout=30)
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout) == [AWKWARD, "$(id) `id` ; x"]
    assert not Path("/tmp/pwned-by-test").exists()


def test_exit_code_stderr_and_an_empty_stdin(conn: Connection) -> None:
    done = conn.run(["sh", "-c", "cat; echo hello; echo oops >&2; exit 3"], timeout=30)
    assert (done.exit_code, done.stdout, done.stderr.strip()) == (3, "hello\n", "oops")


def test_a_command_past_its_time_limit_is_an_error(conn: Connection) -> None:
    with pytest.raises(TransportError, match="did not finish within 1 s"):
        conn.run(["sleep", "30"], timeout=1)
    assert conn.run(["true"], timeout=10).exit_code == 0  # the connection is still usable


def test_commands_from_many_threads_share_one_connection(conn: Connection) -> None:
    def attempt(n: int) -> str:
        try:
            return conn.run(["echo", str(n)], timeout=30).stdout.strip()
        except TransportError as exc:
            return str(exc)

    # Short commands ending while others start: each round gives an EOF sent after a channel's
    # close a chance to reach sshd, which then drops the connection and every command on it.
    with ThreadPoolExecutor(12) as pool:
        for _ in range(20):
            outcomes = list(pool.map(attempt, range(12)))
            assert outcomes == [str(n) for n in range(12)], outcomes


def test_socket_has_tcp_nodelay(conn: Connection) -> None:
    assert conn.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_put_sends_the_agent_and_it_runs_there(conn: Connection, host: SshHost) -> None:
    folder = f"{host.home}/agent-test"
    conn.run(["mkdir", "-p", folder], timeout=30)
    for name, source in agent_files().items():
        conn.put(source, f"{folder}/{name}")
    done = conn.run(["python3", f"{folder}/agent.py", "probe"], timeout=30)
    assert '"python_tag": "cp3' in done.stdout, done
    # An unprivileged agent gets the bubblewrap sandbox in a user namespace of its own.
    assert '"sandbox": "bubblewrap namespaces (user namespace)"' in done.stdout, done


def test_unknown_and_changed_host_keys_are_refused(host: SshHost) -> None:
    host.start()
    endpoint = host.endpoint()
    assert scan_host_key(host.address, host.port) == host.host_key
    with pytest.raises(HostKeyError, match="host key unknown"):
        Connection(dataclasses.replace(endpoint, host_key=None))
    host.new_host_key()
    try:
        with pytest.raises(HostKeyError, match="host key changed") as caught:
            Connection(endpoint, connect_timeout=5)
        assert fingerprint(host.host_key) in str(caught.value)
    finally:
        host.restore_host_key()


def test_a_stopped_builder_is_a_quick_clear_error(host: SshHost) -> None:
    host.stop()
    try:
        with pytest.raises(TransportError, match=f"{host.address}:{host.port}: cannot connect"):
            Connection(host.endpoint(), connect_timeout=5)
    finally:
        host.start()


def test_rsync_pull_copies_regular_files_and_refuses_odd_folders(host: SshHost, tmp_path: Path) -> None:
    host.start()
    outbox = host.home / "outbox-test"
    outbox.mkdir(exist_ok=True)
    big = bytes(range(256)) * 20_000  # 5 MB
    host.write_file(outbox / "big.whl", "")
    (outbox / "big.whl").write_bytes(big)
    host.write_file(outbox / "small.txt", "small")
    (outbox / "link").symlink_to("/etc/passwd")
    known = tmp_path / "known_hosts"
    write_known_hosts(known, [host.endpoint()])
    local = tmp_path / "incoming"
    rsync_pull(host.endpoint(), str(outbox), local, timeout=60, known_hosts=known)
    assert (local / "big.whl").read_bytes() == big
    assert (local / "small.txt").read_text() == "small"
    assert not (local / "link").exists()
    for bad in ("/tmp/x; rm -rf /", "relative/dir", f"{outbox}/../..", "/tmp/a b"):
        with pytest.raises(TransportError, match="refusing remote folder"):
            rsync_pull(host.endpoint(), bad, local, timeout=60, known_hosts=known)
