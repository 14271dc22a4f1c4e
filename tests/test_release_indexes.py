"""An index per OS release, with real releases: an SSH builder in a Debian bullseye root
(Python 3.9, OpenSSL 1.1) and this bookworm machine's local builder (Python 3.11, OpenSSL 3).

A fixture C extension that links libssl, built ``abi3`` on bullseye, is listed in
``www/bullseye/simple/`` and not in ``www/bookworm/simple/``; the bookworm builder's check job
refuses it there (libssl.so.1.1 is not on bookworm), so bookworm builds its own. pip in the
bullseye root and pip on this machine each install from their own release's index and import.

With ``repair = "auditwheel"`` the same wheel, built on bullseye alone, is repaired there for
``manylinux_2_31_x86_64`` with libssl and libcrypto 1.1 grafted in: bookworm's check loads it, so
bookworm's index lists it and bookworm builds nothing, and pip on this machine imports it and
runs OpenSSL 1.1 from inside the wheel.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pypi_simple import PYPI_SIMPLE_ENDPOINT
from sqlalchemy import select

from piwheels_ctl.config import Settings
from piwheels_ctl.db.engine import Database
from piwheels_ctl.db.models import File, ReleaseCheck
from piwheels_ctl.farm import frontend
from piwheels_ctl.publish.server import make_server

from debian_roots import UID_LOCKS, debian_root, run_in_root
from helpers import clean_env, piwheels
from indexserver import IndexServer
from sdists import make_sdist
from sshd import _free_port, _keygen

pytestmark = pytest.mark.build

# A root of its own (the shared bullseye-amd64 one has no libssl-dev, sshd nor venv).
ROOT_NAME = "bullseye-amd64-ssl"
PACKAGES = [
    "python3", "python3-dev", "python3-venv", "python3-pip", "gcc", "libc6-dev", "libssl-dev",
    "openssh-server", "bubblewrap", "ca-certificates", "rsync",
]  # fmt: skip
BUILDER_ADDRESS, SERVE_ADDRESS, UPSTREAM_ADDRESS = "127.0.1.45", "127.0.1.46", "127.0.1.47"
FIXTURE = Path(__file__).parent / "packages-release" / "ssl-abi3-ext"
ABI3_WHEEL = "ssl_abi3_ext-1.0-cp38-abi3-linux_x86_64.whl"
# What auditwheel names it on bullseye (glibc 2.31): the policy's tag, maybe beside older aliases.
REPAIRED_WHEEL = re.compile(r"^ssl_abi3_ext-1\.0-cp38-abi3-(?:[a-z0-9_]+\.)*manylinux_2_31_x86_64\.whl$")


@pytest.fixture(scope="module")
def root() -> Path:
    if shutil.which("debootstrap") is None:
        pytest.fail("debootstrap is needed (apt-get install debootstrap)", pytrace=False)
    return debian_root("bullseye", PACKAGES, name=ROOT_NAME)


@dataclass
class RootHost:
    """sshd running inside the root (its own /run on a tmpfs): root logs in with ``key_file``."""

    port: int
    key_file: Path
    process: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def bullseye_host(root: Path) -> Iterator[RootHost]:
    folder = Path(tempfile.mkdtemp(prefix="sshd-", dir=root / "tmp"))
    inside = "/" + str(folder.relative_to(root))
    try:
        _keygen(folder / "host_key", "bullseye builder")
        key = Path(tempfile.mkdtemp(prefix="pw-release-key-")) / "client_key"
        (folder / "root_keys").write_text(_keygen(key, "controller") + "\n")
        port = _free_port(BUILDER_ADDRESS)
        (folder / "sshd_config").write_text(
            f"ListenAddress {BUILDER_ADDRESS}:{port}\nHostKey {inside}/host_key\nPidFile none\n"
            f"AuthorizedKeysFile {inside}/root_keys\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nAllowUsers root\n"
            "PermitRootLogin prohibit-password\nMaxSessions 50\nSubsystem sftp internal-sftp\n"
        )
        os.makedirs(UID_LOCKS, mode=0o700, exist_ok=True)
        quoted = shlex.quote(str(root))
        script = " && ".join(
            [
                f"mount --bind {quoted} {quoted}",
                f"mount -t proc proc {quoted}/proc",
                f"mount -t tmpfs tmpfs {quoted}/run",  # sshd's /run/sshd, not in the cached root
                f"mkdir -p {quoted}/run/sshd {quoted}{UID_LOCKS}",
                f"mount --bind {UID_LOCKS} {quoted}{UID_LOCKS}",
                f"exec chroot {quoted} env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "
                f"/usr/sbin/sshd -D -e -f {inside}/sshd_config",
            ]
        )
        log = open(folder / "sshd.log", "wb")  # noqa: SIM115 (closed at the end)
        process = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script],
            stdin=subprocess.DEVNULL,
            stderr=log,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection((BUILDER_ADDRESS, port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    found = (folder / "sshd.log").read_text()
                    raise RuntimeError(f"sshd in the root did not start: {found}") from None
                time.sleep(0.1)
        try:
            yield RootHost(port, key, process)
        finally:
            process.terminate()
            process.wait(timeout=30)
            log.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory, build_deps: Path) -> Iterator[IndexServer]:
    folder = tmp_path_factory.mktemp("release-upstream")
    make_sdist(FIXTURE, folder)
    for wheel in build_deps.glob("*.whl"):
        shutil.copy(wheel, folder)
    # The repair's pinned tools, fetched from PyPI once, as a farm fetches them from its build index.
    settings = Settings(data_dir=tmp_path_factory.mktemp("release-repair-tools"))
    for wheel in frontend.repair_tools(settings, "cp39-cp39-linux_x86_64", PYPI_SIMPLE_ENDPOINT, []):
        shutil.copy(wheel, folder)
    with IndexServer(folder, host=UPSTREAM_ADDRESS) as index:
        yield index


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """``serve``'s server on the data folder's www (made here), at an address the root reaches."""
    www = tmp_path / "data" / "www"
    www.mkdir(parents=True)
    server = make_server(www, SERVE_ADDRESS, 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield www, f"http://{SERVE_ADDRESS}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _listed(www: Path, release: str | None, project: str) -> list[str]:
    """The file names the project's PEP 691 page of ``release``'s index (None: the main one) lists."""
    page = www / (f"{release}/simple" if release else "simple") / project / "index.json"
    if not page.exists():
        return []
    return sorted(f["filename"] for f in json.loads(page.read_text())["files"])


def _checks(data: Path) -> list[tuple[str, str, str, list[str]]]:
    db = Database(f"sqlite:///{data / 'piwheels.db'}")
    try:
        with db.session() as session:
            rows = session.execute(
                select(File.filename, ReleaseCheck).join(File, File.id == ReleaseCheck.file_id)
            )
            return sorted((name, c.release, c.status, list(c.failures or [])) for name, c in rows)
    finally:
        db.dispose()


def _built_on_bullseye(
    data: Path, upstream: IndexServer, url: str, bullseye_host: RootHost, repair: str
) -> dict[str, str]:
    """A farm in ``data`` with this machine's local builder (bookworm) and the bullseye SSH
    builder, ``repair`` its setting: ssl-abi3-ext added, built by the bullseye builder alone (the
    local one turned off for that run) and published; the farm's environment."""
    env = clean_env(
        PIWHEELS_DATA_DIR=str(data),
        PIWHEELS_UPSTREAM=upstream.url,
        PIWHEELS_PYTHONS="/usr/bin/python3",
        PIWHEELS_PUBLIC_URL=url + "/",
        PIWHEELS_BUILD_TIMEOUT="600",
        PIWHEELS_CONNECT_TIMEOUT="20",
        PIWHEELS_COMMAND_TIMEOUT="120",
        PIWHEELS_MIN_FREE_MB="50",
        PIWHEELS_REPAIR=repair,
    )
    piwheels(env, "init")
    piwheels(env, "status")  # registers the local builder: this bookworm machine
    piwheels(
        env, "builders", "add", "bullseye", "--host", BUILDER_ADDRESS, "--port", str(bullseye_host.port),
        "--user", "root", "--key", str(bullseye_host.key_file), "--python", "/usr/bin/python3",
        "--trust-host-key",
    )  # fmt: skip
    builders = {b["name"]: b for b in json.loads(piwheels(env, "builders", "list", "--json").stdout)}
    assert set(builders) == {"local", "bullseye"}, builders
    piwheels(env, "add", "ssl-abi3-ext")
    only_bullseye = {**env, "PIWHEELS_LOCAL_BUILDER": "false"}
    out = piwheels(only_bullseye, "run").stdout
    assert "built 1" in out, out
    piwheels(only_bullseye, "publish")
    return env


def _import_here(tmp_path: Path, url: str, release: str) -> subprocess.CompletedProcess[str]:
    """pip on this bookworm machine (a venv of the system's Python) installs ssl-abi3-ext from
    ``release``'s index through ``serve``; the venv's Python imports it and prints the OpenSSL
    version it runs with."""
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
    pip_env = clean_env(PIP_CONFIG_FILE="/dev/null")
    done = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--index-url", f"{url}/{release}/simple/", "ssl-abi3-ext"],
        capture_output=True, text=True, env=pip_env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    code = "import ssl_abi3_ext; print(hex(ssl_abi3_ext.openssl_version()))"
    return subprocess.run(
        [str(venv / "bin" / "python"), "-c", code],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_each_release_lists_what_loads_there_and_pip_installs_from_its_own(
    root: Path,
    bullseye_host: RootHost,
    upstream: IndexServer,
    served: tuple[Path, str],
    tmp_path: Path,
) -> None:
    www, url = served
    data = www.parent
    # Only the bullseye builder builds: its abi3 wheel covers cp311 by its tags, not on bookworm.
    env = _built_on_bullseye(data, upstream, url, bullseye_host, repair="none")
    assert _listed(www, "bullseye", "ssl-abi3-ext") == [ABI3_WHEEL], list(www.rglob("*"))
    assert _listed(www, None, "ssl-abi3-ext") == [ABI3_WHEEL]
    assert (www / "bookworm" / "simple" / "index.json").exists(), "no index for bookworm"
    assert _listed(www, "bookworm", "ssl-abi3-ext") == [], "bullseye's wheel listed for bookworm unchecked"
    root_json = json.loads((www / "bookworm" / "simple" / "index.json").read_text())
    assert root_json["projects"] == [], root_json
    assert [(n, r, s) for n, r, s, _f in _checks(data)] == [(ABI3_WHEEL, "bookworm", "pending")]

    # The bookworm builder checks it first: libssl.so.1.1 is not there, so it builds its own.
    out = piwheels(env, "run").stdout
    assert f"checked {ABI3_WHEEL} on bookworm: refused" in out, out
    checks = _checks(data)
    refused = [c for c in checks if c[:3] == (ABI3_WHEEL, "bookworm", "refused")]
    # The loader's own words: the contrast to the repaired wheel, which bookworm loads.
    assert refused and any("libssl.so.1.1: cannot open shared object file" in f for f in refused[0][3]), (
        checks
    )
    piwheels(env, "publish")
    bookworm = _listed(www, "bookworm", "ssl-abi3-ext")
    assert len(bookworm) == 1 and bookworm != [ABI3_WHEEL], (bookworm, out)
    assert _listed(www, "bullseye", "ssl-abi3-ext") == [ABI3_WHEEL]
    page = json.loads((www / "project" / "ssl-abi3-ext" / "json").read_text())
    assert page["os_releases"] == ["bookworm", "bullseye"], page["os_releases"]
    states = {f["filename"]: f["os_releases"] for r in page["releases"] for f in r["files"]}
    assert states[ABI3_WHEEL]["bullseye"] == "built there", states
    assert states[ABI3_WHEEL]["bookworm"].startswith("refused: "), states
    # The page's text, as a reader sees it (the site's address sits in a span its script may set).
    html = re.sub(r"<[^>]+>", "", (www / "project" / "ssl-abi3-ext" / "index.html").read_text())
    assert f"index-url = {url}/bookworm/simple/" in html and f"index-url = {url}/bullseye/simple/" in html

    # pip on this bookworm machine, from bookworm's index through ``serve``.
    imported = _import_here(tmp_path, url, "bookworm")
    assert imported.returncode == 0 and imported.stdout.startswith("0x3"), imported.stdout + imported.stderr

    # pip in the bullseye root, from bullseye's index.
    place = Path(tempfile.mkdtemp(prefix="pip-", dir=root / "tmp"))
    try:
        inside = "/" + str(place.relative_to(root))
        script = (
            f"python3 -m venv {inside}/venv && {inside}/venv/bin/pip install --index-url "
            f"{url}/bullseye/simple/ ssl-abi3-ext && {inside}/venv/bin/python -c "
            "'import ssl_abi3_ext; print(hex(ssl_abi3_ext.openssl_version()))'"
        )
        done = run_in_root(root, ["sh", "-c", script], env={"PIP_CONFIG_FILE": "/dev/null"}, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert done.stdout.strip().splitlines()[-1].startswith("0x1010"), done.stdout[-2000:]
        assert ABI3_WHEEL in done.stdout, done.stdout[-2000:]
    finally:
        shutil.rmtree(place, ignore_errors=True)


def test_a_wheel_repaired_on_bullseye_is_checked_listed_and_imported_on_bookworm(
    bullseye_host: RootHost, upstream: IndexServer, served: tuple[Path, str], tmp_path: Path
) -> None:
    """The wheel bookworm refuses above, repaired on bullseye: it carries libssl 1.1, so bookworm
    (OpenSSL 3 only) loads it, lists it and builds nothing of its own."""
    www, url = served
    data = www.parent
    env = _built_on_bullseye(data, upstream, url, bullseye_host, repair="auditwheel")
    listed = _listed(www, "bullseye", "ssl-abi3-ext")
    assert len(listed) == 1 and REPAIRED_WHEEL.match(listed[0]), (
        listed,
        piwheels(env, "logs", "ssl-abi3-ext", "1.0").stdout[-3000:],
    )
    wheel = listed[0]
    with zipfile.ZipFile(www / "simple" / "ssl-abi3-ext" / wheel) as archive:
        grafted = [n for n in archive.namelist() if n.startswith("ssl_abi3_ext.libs/")]
    for library in ("libssl", "libcrypto"):
        assert any(n.split("/")[1].startswith(library) and n.endswith(".so.1.1") for n in grafted), (
            library,
            grafted,
        )
    deps = piwheels(env, "deps", "ssl-abi3-ext").stdout
    assert "apt install" not in deps and "nothing to install" in deps, deps
    assert [(n, r, s) for n, r, s, _f in _checks(data)] == [(wheel, "bookworm", "pending")]

    # bookworm's builder loads it (libssl 1.1 comes with it) and so has nothing to build.
    out = piwheels(env, "run").stdout
    assert f"checked {wheel} on bookworm: passed" in out, out
    assert "built 0, failed 0" in out, out
    assert [(n, r, s) for n, r, s, _f in _checks(data)] == [(wheel, "bookworm", "passed")], _checks(data)
    piwheels(env, "publish")
    assert _listed(www, "bookworm", "ssl-abi3-ext") == [wheel], list((www / "bookworm").rglob("*"))
    assert _listed(www, "bullseye", "ssl-abi3-ext") == [wheel]

    # pip here, from bookworm's index: OpenSSL 1.1 runs, from inside the wheel (bookworm has 3).
    imported = _import_here(tmp_path, url, "bookworm")
    assert imported.returncode == 0 and imported.stdout.startswith("0x1010"), (
        imported.stdout + imported.stderr
    )
