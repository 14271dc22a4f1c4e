"""The build's proxy on its own: which addresses are public, and what a build that asks without
end can cost the agent (the proxy runs in the agent's process: the controller's, for the local
builder)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from piwheels_ctl.agent.buildnet import Proxy, is_public


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.215.14", True),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.20.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # a cloud's metadata service
        ("100.64.0.1", False),
        ("198.18.0.1", False),
        ("192.0.0.8", False),
        ("::", False),
        ("::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:93.184.215.14", True),
        ("::127.0.0.1", False),
        ("64:ff9b::10.0.0.1", False),  # NAT64 to a private address
        ("64:ff9b::93.184.215.14", True),
        ("64:ff9b:1::1", False),
        ("2002:0a00:0001::1", False),  # 6to4 of 10.0.0.1
        ("2002:5db8:d70e::1", True),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
        ("fd00::1", False),
        ("fe80::1", False),
        ("ff02::1", False),
        ("not an address", False),
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    assert is_public(address) is public, address


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Proxy]:
    started = Proxy(str(tmp_path / "proxy.sock"), [])
    try:
        yield started
    finally:
        started.close()


def _ask(path: str, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(60)
        client.connect(path)
        client.sendall(request)
        return client.recv(4096)


def test_a_build_asking_without_end_gets_a_bounded_list_of_refusals(proxy: Proxy) -> None:
    for n in range(Proxy.MAX_ATTEMPTS + 50):
        answer = _ask(proxy.path, f"CONNECT 10.0.{n // 250}.{n % 250}:80 HTTP/1.1\r\n\r\n".encode())
        assert answer.startswith(b"HTTP/1.1 403"), answer
    for _ in range(20):  # the same one again and again is one refusal
        _ask(proxy.path, b"CONNECT 10.0.0.0:80 HTTP/1.1\r\n\r\n")
    assert len(proxy.attempts) == Proxy.MAX_ATTEMPTS, len(proxy.attempts)
    assert proxy.attempts[0] == "10.0.0.0:80: refused, 10.0.0.0 is not a public address", proxy.attempts[0]


def test_connections_held_open_take_a_bounded_number_of_threads(proxy: Proxy) -> None:
    before = threading.active_count()
    held = []
    try:
        for _ in range(Proxy.MAX_CLIENTS + 40):  # each sends nothing; the 40 wait in the backlog
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect(proxy.path)
            held.append(client)
        time.sleep(1)  # what the proxy would start, it has started by now
        threads = threading.active_count() - before
        assert threads <= Proxy.MAX_CLIENTS, f"{threads} threads for {len(held)} idle connections"
    finally:
        for client in held:
            client.close()
    # Once they go, the proxy serves again.
    answer = _ask(proxy.path, b"CONNECT 10.9.9.9:80 HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 403"), answer
