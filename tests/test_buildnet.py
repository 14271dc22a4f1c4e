"""The build's network: which addresses are public, where the proxy lets a build go (deny by
default), this machine's own addresses, what a build that asks without end can cost the agent
(the proxy runs in the agent's process: the controller's, for the local builder), and the
attack itself: a real sandboxed build asking for its machine's public-looking address, in a
private network namespace."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from piwheels_ctl.agent import localaddrs, netpolicy, netranges
from piwheels_ctl.agent.buildnet import Proxy
from piwheels_ctl.agent.jobspec import request
from piwheels_ctl.agent.netpolicy import Policy, Refused
from piwheels_ctl.agent.netranges import is_public, special_block
from piwheels_ctl.config import Settings, load_settings
from piwheels_ctl.errors import ConfigError
from piwheels_ctl.farm import agentcall

from sdists import make_sdist, setuptools_project

HERE = Path(__file__).parent


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.215.14", True),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", True),
        ("64:ff9b::93.184.215.14", True),  # NAT64 (DNS64 networks) of a public address
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.20.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # a cloud's metadata service
        ("100.64.0.1", False),
        ("198.18.0.1", False),
        ("192.0.0.8", False),
        ("192.0.2.1", False),  # the documentation nets
        ("198.51.100.7", False),
        ("203.0.113.7", False),
        ("192.31.196.1", False),  # AS112, AMT, the 6to4 relay anycast, AS112 direct delegation
        ("192.52.193.1", False),
        ("192.88.99.1", False),
        ("192.175.48.1", False),
        ("224.0.0.1", False),
        ("240.0.0.1", False),
        ("255.255.255.255", False),
        ("::", False),
        ("::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:93.184.215.14", False),  # IPv4-mapped: never what a name resolves to
        ("::ffff:0:203.0.113.7", False),  # IPv4-translated (SIIT)
        ("::ffff:0:93.184.215.14", False),
        ("::127.0.0.1", False),
        ("::93.184.215.14", False),  # IPv4-compatible (deprecated)
        ("64:ff9b::10.0.0.1", False),  # NAT64 to a private address
        ("64:ff9b::203.0.113.7", False),
        ("64:ff9b:1::1", False),
        ("100::1", False),  # discard-only
        ("100:0:0:1::1", False),  # dummy prefix
        ("2001:2::1", False),  # benchmarking
        ("2001:20::1", False),  # ORCHIDv2
        ("2001:db8::1", False),  # documentation
        ("3fff::1", False),  # documentation
        ("2002:0a00:0001::1", False),  # 6to4 of 10.0.0.1
        ("2002:5db8:d70e::1", False),  # 6to4 of a public address: 6to4 is refused as a whole
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
        ("2620:4f:8000::1", False),
        ("3ffe::1", False),  # the 6bone
        ("5f00::1", False),  # SRv6
        ("4000::1", False),  # unassigned
        ("fd00::1", False),
        ("fe80::1", False),
        ("fe80::1%lo", False),
        ("fec0::1", False),  # site-local (deprecated)
        ("ff02::1", False),
        ("not an address", False),
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    assert is_public(address) is public, f"{address}: {special_block(address)}"


def test_every_block_of_the_table_is_refused_at_both_ends() -> None:
    for (size, network, length), what in netranges.BLOCKS:
        first = network.to_bytes(size, "big")
        last = (network | ((1 << (size * 8 - length)) - 1)).to_bytes(size, "big")
        for raw in (first, last):
            text = socket.inet_ntop(socket.AF_INET if size == 4 else socket.AF_INET6, raw)
            assert special_block(text) is not None, f"{text} ({what}) is taken for public"


@pytest.mark.parametrize(
    ("entry", "parsed"),
    [
        ("files.example.org", ("files.example.org", None)),
        ("Files.Example.org.:8443", ("files.example.org", 8443)),
        ("*.example.org", ("*.example.org", None)),
        ("*", ("*", None)),
        ("*:22", ("*", 22)),
        ("93.184.215.14:80", ("93.184.215.14", 80)),
        ("[2001:db8::1]:443", ("2001:db8::1", 443)),
        ("[2001:db8::1]", ("2001:db8::1", None)),
    ],
)
def test_allow_entries(entry: str, parsed: tuple[str, int | None]) -> None:
    assert netpolicy.parse_host(entry) == parsed


@pytest.mark.parametrize(
    "entry",
    ["", "a b", "example.org:0", "example.org:http", "2001:db8::1", "[example.org]", "ex*.org", "*.*"],
)
def test_bad_allow_entries_say_what_is_wrong(entry: str) -> None:
    with pytest.raises(ValueError, match=r"not a|port|bracket"):
        netpolicy.parse_host(entry)


def _refusal(policy: Policy, host: str, port: int) -> str:
    with pytest.raises(Refused) as refused:
        policy.addresses(host, port)
    return str(refused.value)


def test_deny_by_default_without_even_looking_the_name_up() -> None:
    policy = Policy([("127.0.0.1", 8080)], [], [])
    assert policy.addresses("127.0.0.1", 8080), "the build index is reached wherever it is"
    for host, port in (("127.0.0.1", 8081), ("93.184.215.14", 443), ("exfiltrate-this.example.invalid", 443)):
        said = _refusal(policy, host, port)
        assert said == f"{host}:{port}: refused, not a host builds may reach (build_network_allow)", said


def test_a_job_allows_its_index_find_links_sdist_host_and_the_operators_hosts() -> None:
    job = request(
        "python", "demo", "1.0", "/o", "/l", "/w", index_url="http://Index.Example:8080/simple/",
        find_links=["/srv/links", "https://user:pw@[2001:db8::5]/links/"],
        sdist_url="https://files.example.org/packages/demo-1.0.tar.gz",
        network_allow=["exact.example.net", "*.pattern.example", "*:9418"], farm_addresses=["192.0.2.77"],
    )  # fmt: skip
    policy = netpolicy.for_job(job)
    assert policy.anywhere == [("index.example", 8080), ("2001:db8::5", 443), ("exact.example.net", None)]
    assert policy.named == [("files.example.org", 443)]
    assert policy.public == [("*.pattern.example", None), ("*", 9418)]
    assert socket.inet_pton(socket.AF_INET, "192.0.2.77") in policy.farm


def test_the_sdists_host_is_reached_wherever_it_is_but_on_the_farm() -> None:
    # Through some proxies (this machine's) PyPI's file host resolves into a documentation net:
    # a host the index named is reached there, never at the farm's own addresses.
    policy = Policy([], [], ["127.0.0.1"], named=[("localhost", 443)])
    assert "farm's own" in _refusal(policy, "localhost", 443)
    policy = Policy([], [], [], named=[("localhost", 443)])
    policy.farm = set()  # a farm whose machines are elsewhere: localhost stands for a named host
    assert policy.addresses("localhost", 443)
    assert "not a host builds may reach" in _refusal(policy, "localhost", 80)


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("203.0.113.7", "documentation (TEST-NET-3)"),
        ("192.0.2.9", "documentation (TEST-NET-1)"),
        ("198.51.100.9", "documentation (TEST-NET-2)"),
        ("::ffff:93.184.215.14", "IPv4-mapped"),
        ("::ffff:0:93.184.215.14", "IPv4-translated (SIIT)"),
        ("fec0::1", "site-local (deprecated)"),
        ("2001:db8::1", "documentation"),
        ("64:ff9b::127.0.0.1", "NAT64 of an address that is loopback"),
    ],
)
def test_a_pattern_reaches_no_special_address(address: str, why: str) -> None:
    said = _refusal(Policy([], [("*", None)], []), address, 443)  # the address as the resolver spells it
    assert said.startswith(f"{address}:443: refused, ") and said.endswith(
        f"is not a public address ({why})"
    ), said


def test_a_pattern_reaches_no_address_of_the_farm() -> None:
    policy = Policy([], [("*", None)], ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"])
    assert policy.addresses("8.8.8.8", 443), "a public address of no farm machine"
    for address in ("93.184.215.14", "64:ff9b::93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"):
        said = _refusal(policy, address, 443)
        assert said.startswith(f"{address}:443: refused") and said.endswith("the farm's own machines"), said
    for address in localaddrs.local_addresses():  # this machine's, asked when the policy is made
        assert any(raw in policy.farm for raw in netranges.leads_to(address)), address


def test_a_name_is_judged_by_every_address_it_resolves_to(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real answer from /etc/hosts (localhost), then a resolver (a fake, named as one: this
    machine's DNS cannot be made to answer for a test) whose answer for one name is a public
    address and the machine's own public-looking one."""
    policy = Policy([], [("*.example.test", None), ("localhost", 8080)], ["93.184.215.14"])
    assert "127.0.0.1 is not a public address (loopback)" in _refusal(policy, "localhost", 8080)
    real = socket.getaddrinfo
    answers = {"farm.example.test": ["8.8.8.8", "93.184.215.14"], "docs.example.test": ["198.51.100.9"]}

    def resolver(host: str, port: int, *args: Any) -> list[Any]:
        if host not in answers:
            return real(host, port, *args)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in answers[host]]

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    said = _refusal(policy, "farm.example.test", 443)
    assert said == "farm.example.test:443: refused, 93.184.215.14 is an address of the farm's own machines", (
        said
    )
    said = _refusal(policy, "docs.example.test", 80)
    assert "198.51.100.9 is not a public address (documentation (TEST-NET-2))" in said, said


def test_this_machines_addresses_are_the_kernels() -> None:
    """getifaddrs gives what ``ip -o addr`` shows; the /proc fallback a part of it (the local
    routes of interfaces that are up) with loopback."""
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2's ip to compare with")
    asked = set(localaddrs.local_addresses())
    shown = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    listed = {line.split()[3].split("/")[0] for line in shown.splitlines()}
    assert asked == listed, f"getifaddrs: {sorted(asked)}, ip: {sorted(listed)}"
    proc = localaddrs._from_proc()
    assert {"127.0.0.1", "::1"} <= proc <= listed, f"/proc: {sorted(proc)}, ip: {sorted(listed)}"


def test_the_controller_sends_its_addresses_and_the_operators_hosts_with_each_job() -> None:
    settings = Settings(
        build_network_allow=["*.example.org", "files.example:8443"],
        database_url="postgresql://u@localhost/db",
    )
    job = agentcall.build_request(settings, "/usr/bin/python3", "demo", "1.0", outbox="/o", log_path="/l",
                                  work_root="/w")  # fmt: skip
    assert job.network_allow == ["*.example.org", "files.example:8443"], job
    assert set(job.farm_addresses) >= {*localaddrs.local_addresses(), "127.0.0.1"}, job.farm_addresses


def test_a_bad_allow_entry_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"PIWHEELS_BUILD_NETWORK_ALLOW: .*'files\.example:http'.*port"):
        load_settings(environ={"PIWHEELS_BUILD_NETWORK_ALLOW": "*.example.org, files.example:http"})
    allowed = load_settings(environ={"PIWHEELS_BUILD_NETWORK_ALLOW": "*.example.org, files.example:8443"})
    assert allowed.build_network_allow == ["*.example.org", "files.example:8443"]


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Proxy]:
    started = Proxy(str(tmp_path / "proxy.sock"), Policy([], [("*", None)], []))
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
    said = proxy.attempts[0]
    assert said == "10.0.0.0:80: refused, 10.0.0.0 is not a public address (private)", said


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


# The hostile sdist: its setup.py asks the build's proxy for each target of attack.json, reads
# /simple/ where it gets through, and fails: it cannot build without the farm's own index.
ATTACK_SETUP = """\
import json, os, socket, sys
from setuptools import setup
CRLF = "\\x0d\\x0a"  # setuptools' build_meta turns a backslash-r-backslash-n in setup.py into one newline
relay = int(os.environ["https_proxy"].rsplit(":", 1)[1])
here = os.path.dirname(os.path.abspath(__file__))
for target in json.load(open(os.path.join(here, "attack.json"))):
    tunnel = socket.create_connection(("127.0.0.1", relay), timeout=60)
    tunnel.sendall((("CONNECT %s HTTP/1.1" + CRLF + "Host: %s" + CRLF + CRLF) % (target, target)).encode())
    status = tunnel.recv(4096).decode().split(CRLF)[0]
    print("CONNECT %s -> %s" % (target, status))
    if " 200 " in status:
        tunnel.sendall(("GET /simple/ HTTP/1.0" + CRLF + "Host: farm" + CRLF + CRLF).encode())
        print("REACHED %s: %r" % (target, tunnel.recv(65536)[-200:]))
    tunnel.close()
sys.exit("cannot build without the farm's own index")
setup()
"""
# This machine's own addresses in the namespace: the issue's, and one that looks public, which
# only the farm's-own-addresses wall stops; /etc/hosts there names the second.
OWN = ("203.0.113.7", "93.184.215.14")
HOSTS = "127.0.0.1 localhost\n93.184.215.14 farm.example.test\n"


@pytest.mark.build
@pytest.mark.timeout(1800)
def test_a_build_cannot_reach_its_machines_public_looking_addresses(tmp_path: Path, build_deps: Path) -> None:
    """The attack of issue 23 for real: ``serve`` listens on all addresses of a machine that has
    203.0.113.7 and 93.184.215.14 on its own interface; a real sandboxed pip build of a hostile
    sdist asks its proxy for them, by address, by a name that resolves there, and in IPv6's
    IPv4 forms. Built with the default allow-list (its index only) and with ``*`` (any host
    at a public address): nothing reaches ``serve``, the build fails as needs-network."""
    if os.geteuid() != 0:
        pytest.skip("needs root: a private network namespace with addresses of its own")
    missing = [tool for tool in ("unshare", "ip", "mount", "bwrap") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")
    port = 80  # the namespace is empty: any port is free there; "*" opens 80 and 443
    targets = [f"{a}:{port}" for a in OWN] + [f"farm.example.test:{port}"]
    targets += [f"[::ffff:{OWN[1]}]:{port}", f"[::ffff:0:{OWN[1]}]:{port}"]
    files = {
        "setup.py": ATTACK_SETUP,
        "attack.json": json.dumps(targets),
        "MANIFEST.in": "include attack.json\n",
    }
    files["hostile.py"] = "VALUE = 42\n"
    project = setuptools_project(
        tmp_path / "src", "hostile", files, tables="\n[tool.setuptools]\npy-modules = ['hostile']\n"
    )
    config = {
        "sdist": str(make_sdist(project, tmp_path / "dist")), "index": str(build_deps), "port": port,
        "work": str(tmp_path / "ns"), "own": OWN, "cases": {"default": [], "open": ["*"]},
    }  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "hosts").write_text(HOSTS)
    script = " && ".join(
        ["ip link set lo up", *(f"ip addr add {a}/32 dev lo" for a in OWN),
         f"mount --bind {tmp_path}/hosts /etc/hosts",
         f"exec {sys.executable} {HERE / 'netns_attack.py'} {tmp_path}/config.json"]
    )  # fmt: skip
    done = subprocess.run(
        ["unshare", "--net", "--mount", "--propagation", "private", "--", "sh", "-c", script],
        capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, f"the namespace's run failed ({done.returncode}): {done.stderr[-3000:]}"
    answers = json.loads(done.stdout.strip().splitlines()[-1])
    for address in OWN:  # the target is real: the machine itself gets serve's index there
        assert "the farm's own index" in answers["direct"][address], answers["direct"]

    default, opened = answers["default"], answers["open"]
    for case in (default, opened):
        log = case["log"]
        assert "REACHED" not in log, log[-4000:]
        assert all(f"CONNECT {t} -> HTTP/1.1 403 Forbidden" in log for t in targets), log[-4000:]
        assert case["result"]["status"] == "failed", case["result"]
        assert case["failure"][0] == "needs-network", (case["failure"], log[-3000:])
    not_allowed = "refused, not a host builds may reach (build_network_allow)"
    assert default["result"]["network"] == [
        f"{t.replace('[', '').replace(']', '')}: {not_allowed}" for t in targets
    ]
    assert default["failure"][1] == f"{OWN[0]}:{port}: {not_allowed}", default["failure"]
    why = dict(zip(targets, opened["result"]["network"], strict=True))
    assert why[targets[0]].endswith("203.0.113.7 is not a public address (documentation (TEST-NET-3))"), why
    for target in targets[1:3]:
        assert why[target].endswith(f"{OWN[1]} is an address of the farm's own machines"), why
    assert why[targets[3]].endswith("is not a public address (IPv4-mapped)"), why
    assert why[targets[4]].endswith("is not a public address (IPv4-translated (SIIT))"), why


@pytest.mark.parametrize(
    ("address", "fetched"),
    [("203.0.113.80", True), ("2001:db8::1", True), ("93.184.215.14", True), ("127.0.0.1", False),
     ("10.1.2.3", False), ("169.254.169.254", False), ("::ffff:192.168.1.1", False), ("fec0::1", False)],
)  # fmt: skip
def test_the_controller_downloads_from_public_and_documentation_nets_only(
    address: str, fetched: bool
) -> None:
    # A documentation net is routed nowhere (this machine's proxy maps PyPI's file host there);
    # a build still never reaches one (test_a_pattern_reaches_no_special_address above).
    assert netranges.reaches_no_network_of_ours(address) is fetched
