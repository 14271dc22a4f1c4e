"""The farm's shared compiler cache, for real: two builders (sshd on loopback) and the master
role's nginx (rendered from its template) on a loopback address of its own. A C extension built
on one builder is a cache hit on the other; a build reaches only its own project's entries."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from piwheels_ctl.agent import remotecache

from cacheserver import CacheServer, render
from helpers import clean_env, piwheels
from indexserver import IndexServer
from sdists import PACKAGES, make_sdist
from sshd import SshHost, ssh_hosts

pytestmark = pytest.mark.build

SYSTEM_PYTHON = "/usr/bin/python3"
BUILDERS = [("127.0.1.30", "pwccache1"), ("127.0.1.31", "pwccache2")]
CACHE_ADDRESS = "127.0.1.32"
OUTSIDER = "127.0.1.33"  # an address the cache does not allow
SECRET = "s3cret-path"


@pytest.fixture(scope="module")
def hosts() -> Iterator[list[SshHost]]:
    with ssh_hosts("piwheels-ccache-hosts-", BUILDERS) as started:
        yield started


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CacheServer]:
    # The agents reach it from 127.0.0.1 (loopback's source address), not from OUTSIDER.
    with CacheServer(tmp_path_factory.mktemp("ccache-nginx"), CACHE_ADDRESS, SECRET, ["127.0.0.1"]) as server:
        yield server


@pytest.fixture(scope="module")
def upstream(
    tmp_path_factory: pytest.TempPathFactory, fixture_sdists: dict[str, Path], build_deps: Path
) -> Iterator[IndexServer]:
    folder = tmp_path_factory.mktemp("ccache-upstream")
    shutil.copy(fixture_sdists["c-ext"], folder)
    for wheel in build_deps.glob("*.whl"):
        shutil.copy(wheel, folder)
    with IndexServer(folder) as index:
        yield index


@dataclass
class Farm:
    env: dict[str, str]

    def cli(self, *args: str) -> str:
        return piwheels(self.env, *args).stdout

    def register(self, name: str, host: SshHost, *extra: str) -> None:
        self.cli(
            "builders", "add", name, "--host", host.address, "--port", str(host.port), "--user", host.user,
            "--key", str(host.key_file), "--python", SYSTEM_PYTHON, "--trust-host-key", *extra,
        )  # fmt: skip

    def builder(self, name: str) -> dict[str, object]:
        rows = json.loads(self.cli("builders", "list", "--json"))
        return next(row for row in rows if row["name"] == name)


def _farm(tmp_path: Path, upstream: IndexServer, url: str, **settings: str) -> Farm:
    farm = Farm(
        clean_env(
            PIWHEELS_DATA_DIR=str(tmp_path / "data"),
            PIWHEELS_UPSTREAM=upstream.url,
            PIWHEELS_LOCAL_BUILDER="false",
            PIWHEELS_CCACHE_REMOTE_URL=url,
            PIWHEELS_BUILD_TIMEOUT="300",
            PIWHEELS_MIN_FREE_MB="50",
            **settings,
        )
    )
    farm.cli("init")
    return farm


def _remote_stats(host: SshHost, project: str) -> dict[str, int]:
    """ccache's own counters of ``project``'s cache on ``host``."""
    folder = host.home / "piwheels" / "ccache" / "projects" / project
    done = subprocess.run(
        ["ccache", "--print-stats"], env={**os.environ, "CCACHE_DIR": str(folder)},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return {k: int(v) for k, v in (line.split("\t") for line in done.stdout.splitlines())}


def test_the_second_builder_gets_hits_from_what_the_first_compiled(
    tmp_path: Path, hosts: list[SshHost], cache: CacheServer, upstream: IndexServer
) -> None:
    farm = _farm(tmp_path, upstream, cache.url)
    farm.register("b1", hosts[0])
    assert str(farm.builder("b1")["ccache_remote"]).startswith("on (ccache 4."), farm.builder("b1")
    table = piwheels({**farm.env, "COLUMNS": "250"}, "builders", "list").stdout
    assert "shared ccache" in table and "on (ccache 4." in table, table
    farm.cli("add", "c-ext")
    assert "built 1" in farm.cli("run")
    first = cache.requests("c-ext")
    assert ("PUT", 201) in first, first
    assert ("GET", 200) not in first, f"a cold cache had entries: {first}"

    # The same version again, on the other builder (this machine has one CPython: the same ABI).
    farm.cli("builders", "remove", "b1")
    farm.register("b2", hosts[1])
    farm.cli("rebuild", "c-ext==1.0")
    assert "built 1" in farm.cli("run")
    second = cache.requests("c-ext")[len(first) :]
    assert ("GET", 200) in second, f"the second builder found nothing in the shared cache: {second}"
    stats = _remote_stats(hosts[1], "c-ext")
    assert stats["remote_storage_hit"] >= 1 and stats["local_storage_hit"] == 0, stats
    log = farm.cli("logs", "c-ext", "1.0")
    assert "shared compiler cache: 2 of 2 found, 0 of 0 stored" in log, log[-3000:]  # an object, a manifest
    # Nothing outside the project's own folder (and the probes' test entries).
    assert sorted(p.name for p in cache.cache.iterdir()) == ["_probe", "c-ext"]


def test_a_builder_that_cannot_use_the_cache_builds_without_it(
    tmp_path: Path, hosts: list[SshHost], cache: CacheServer, upstream: IndexServer
) -> None:
    wrong = cache.url.replace(SECRET, "not-the-secret")
    farm = _farm(tmp_path, upstream, wrong)
    farm.register("b2", hosts[1], "--no-build-check")
    state = str(farm.builder("b2")["ccache_remote"])
    assert state == f"off: {CACHE_ADDRESS}: storing answered 404", state


def _ask(forwarder: remotecache.Forwarder, request: bytes) -> bytes:
    """``request`` as the build's ccache sends it, and what the build gets back."""
    build, agent = socket.socketpair()
    with build, agent:
        head, _, rest = request.partition(b"\r\n\r\n")
        forwarder.forward(agent, head, rest)
        agent.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := build.recv(65536):
            answer += chunk
    return answer


def test_a_build_reaches_only_its_own_projects_entries(cache: CacheServer) -> None:
    victim = cache.cache / "victim" / "ab"
    victim.mkdir(parents=True)
    (victim / "cdef").write_bytes(b"the victim's object")
    hostile = remotecache.Forwarder(cache.url, "hostile", 1024, 20000)
    for request, status in [
        (b"GET /../victim/ab/cdef HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
        (b"GET /ab/..%2f..%2fvictim HTTP/1.1\r\n\r\n", b"400"),
        (b"GET //victim/ab/cdef HTTP/1.1\r\n\r\n", b"400"),
        (b"DELETE /ab/cdef HTTP/1.1\r\n\r\n", b"405"),
        (b"PUT /ab/cdef HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", b"411"),
        (b"PUT /ab/cdef HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n", b"413"),
    ]:
        answer = _ask(hostile, request)
        assert answer.startswith(b"HTTP/1.1 " + status), (request, answer)
    # What it may do lands in its own folder, the body cut at its Content-Length.
    answer = _ask(hostile, b"PUT /ab/cdef HTTP/1.1\r\nContent-Length: 4\r\nHost: victim\r\n\r\nmineGET /x")
    assert answer.startswith(b"HTTP/1.1 201"), answer
    assert (cache.cache / "hostile" / "ab" / "cdef").read_bytes() == b"mine"
    assert (victim / "cdef").read_bytes() == b"the victim's object"
    assert hostile.counts == {"get": 0, "found": 0, "put": 1, "stored": 1, "refused": 6, "over_quota": 0}


def _stored(folder: Path) -> int:
    """Bytes of the entries in ``folder`` of the cache."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_writes_past_a_builds_quota_are_refused_and_reads_still_served(cache: CacheServer) -> None:
    greedy = remotecache.Forwarder(cache.url, "greedy", quota_mb=1, quota_objects=100)
    put = b"PUT /ab/%d HTTP/1.1\r\nContent-Length: 300000\r\n\r\n" + b"x" * 300_000
    answers = [_ask(greedy, put % i) for i in range(5)]
    statuses = [answer[9:12].decode() for answer in answers]
    assert statuses == ["201", "201", "201", "507", "507"], answers[-1]  # 900 kB of 1 MiB, then full
    assert b"quota" in answers[3], answers[3]
    assert _stored(cache.cache / "greedy") == 900_000, _stored(cache.cache / "greedy")
    assert greedy.counts == {"get": 0, "found": 0, "put": 3, "stored": 3, "refused": 0, "over_quota": 2}
    assert "2 refused over this build's quota (1 MB, 100 objects)" in greedy.summary(), greedy.summary()

    many = remotecache.Forwarder(cache.url, "many", quota_mb=1, quota_objects=2)
    small = b"PUT /cd/%d HTTP/1.1\r\nContent-Length: 1\r\n\r\nx"
    statuses = [_ask(many, small % i)[9:12].decode() for i in range(3)]
    assert statuses == ["201", "201", "507"], statuses
    assert len(list((cache.cache / "many" / "cd").iterdir())) == 2
    # Reading is never refused: ccache still finds what the build stored.
    assert _ask(many, b"GET /cd/0 HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200")


# A project whose build stores junk in the shared compiler cache through its relay, as fast as it
# can (48 entries of 4 MiB), then builds its C extension through ccache as usual.
FLOODS_THE_CACHE = """\
import os, socket, sys
from setuptools import Extension, setup

CRLF = bytes([13, 10])  # not spelled with backslashes: setuptools rewrites those in a setup.py
if "bdist_wheel" in sys.argv:  # once: in the build itself, not in its metadata steps
    host, port = os.environ["CCACHE_REMOTE_STORAGE"].split("/")[2].split(":")
    body = b"x" * (4 << 20)
    for i in range(48):
        sock = socket.create_connection((host, int(port)), timeout=60)
        try:
            head = b"PUT /ju/nk%d HTTP/1.1" % i + CRLF + b"Content-Length: %d" % len(body) + CRLF + CRLF
            sock.sendall(head + body)
            print("flood", i, sock.recv(100).split(CRLF)[0])
        except OSError as exc:
            print("flood", i, exc)
        finally:
            sock.close()

setup(ext_modules=[Extension("c_ext", ["c_ext.c"])])
"""


def test_a_build_that_writes_past_its_quota_fills_no_disk_and_still_builds(
    tmp_path: Path, hosts: list[SshHost], cache: CacheServer, upstream: IndexServer
) -> None:
    project = tmp_path / "floods-ccache"
    shutil.copytree(PACKAGES / "c-ext", project)
    toml = project / "pyproject.toml"
    toml.write_text(toml.read_text().replace('name = "c-ext"', 'name = "floods-ccache"'))
    (project / "setup.py").write_text(FLOODS_THE_CACHE)
    make_sdist(project, upstream.folder)
    farm = _farm(tmp_path, upstream, cache.url, PIWHEELS_CCACHE_REMOTE_BUILD_MB="16")
    farm.register("b1", hosts[0])
    farm.cli("add", "floods-ccache")
    out = farm.cli("run")
    log = farm.cli("logs", "floods-ccache", "1.0")
    assert "built 1" in out, f"the build did not complete: {out}\n{log[-3000:]}"
    stored = _stored(cache.cache / "floods-ccache")
    assert stored <= 16 << 20, f"the build stored {stored} bytes in the shared cache, past its 16 MiB"
    puts = [status for method, status in cache.requests("floods-ccache") if method == "PUT"]
    assert len(puts) <= 4, f"{len(puts)} PUTs reached nginx past the quota: {puts}"
    assert "refused over this build's quota (16 MB" in log, log[-3000:]
    # ccache itself was refused too (the quota was used up), and kept its objects locally.
    stats = _remote_stats(hosts[0], "floods-ccache")
    assert stats["remote_storage_error"] >= 1 and stats["local_storage_write"] >= 1, stats


def test_the_cache_answers_only_the_builders_addresses_and_the_secret_path(cache: CacheServer) -> None:
    def status(source: str, path: str) -> str:
        with socket.create_connection((cache.address, cache.port), source_address=(source, 0)) as sock:
            sock.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
            return sock.recv(100).decode().split()[1]

    (cache.cache / "some").mkdir(exist_ok=True)
    (cache.cache / "some" / "entry").write_bytes(b"x")
    assert status("127.0.0.1", f"/ccache/{SECRET}/some/entry") == "200"
    assert status(OUTSIDER, f"/ccache/{SECRET}/some/entry") == "403"
    assert status("127.0.0.1", "/ccache/some/entry") == "404"
    assert status("127.0.0.1", f"/ccache/{SECRET}/some/") == "403"  # no listing
    # One entry is at most master_ccache_max_entry (64m): nginx refuses a larger one unread.
    too_big = f"PUT /ccache/{SECRET}/big/ab/cd HTTP/1.0\r\nContent-Length: {(64 << 20) + 1}\r\n\r\n"
    with socket.create_connection((cache.address, cache.port)) as sock:
        sock.sendall(too_big.encode())
        answer = sock.recv(100).decode()
    assert answer.split()[1] == "413", answer
    assert not (cache.cache / "big").exists()


def test_an_old_ccache_keeps_the_shared_cache_off(
    tmp_path: Path, cache: CacheServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "bin" / "ccache"  # a fake ccache (named as such): Debian bullseye's version
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'ccache version 4.2.1'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    assert remotecache.check(cache.url) == "off: ccache 4.2 has no remote storage (4.4 or later)"
    monkeypatch.undo()
    assert remotecache.check(cache.url).startswith("on (ccache 4.")


def _prune(tmp_path: Path, folder: Path, entries: list[str], **bounds: int) -> list[str]:
    """The entries (400 kB each, the first the newest) the role's prune script keeps in ``folder``."""
    script = tmp_path / "prune.sh"
    script.write_text(render("piwheels-ccache-prune.sh.j2", master_ccache_dir=str(folder), **bounds))
    for age, name in enumerate(entries):
        entry = folder / name
        entry.parent.mkdir(parents=True, exist_ok=True)
        entry.write_bytes(b"x" * 400_000)
        os.utime(entry, (0, 2_000_000_000 - 3600 * age))
    subprocess.run(["sh", str(script)], check=True)
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_the_prune_script_keeps_the_newest_entries_within_the_bound(tmp_path: Path) -> None:
    folder = tmp_path / "cache dir"
    entries = ["p/ab/newest", "p/cd/new", "q/ef/old", "q/01/oldest"]
    left = _prune(tmp_path, folder, entries, master_ccache_max_mb=1)
    assert left == ["p/ab/newest", "p/cd/new"], left  # 800 kB of the 1 MB; the next would pass it
    assert not (folder / "q").exists()  # emptied folders go too


def test_the_prune_script_keeps_each_project_within_its_own_bound(tmp_path: Path) -> None:
    folder = tmp_path / "cache dir"
    entries = ["greedy/ab/1", "greedy/ab/2", "greedy/ab/3", "greedy/ab/4", "honest/cd/1", "honest/cd/2"]
    left = _prune(tmp_path, folder, entries, master_ccache_max_mb=100, master_ccache_project_max_mb=1)
    # Two entries a project (800 kB of its 1 MB), newest first: the greedy one's older entries go,
    # the honest one's, older still, stay.
    assert left == ["greedy/ab/1", "greedy/ab/2", "honest/cd/1", "honest/cd/2"], left
