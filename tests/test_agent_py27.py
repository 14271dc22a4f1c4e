"""The agent on a real Python 2.7 (and the 3.9) of a Debian bullseye root, every path of a build.

Bookworm has no Python 2.7: the tests make a bullseye root with debootstrap (cached outside the
clone, see ``debian_roots``) and run the agent there, with bullseye's own bubblewrap (0.4, which
knows no ``--perms``). The "build" is a shell script standing in for ``python -m pip wheel`` (a
fake interpreter, named as such) so that each path — a failure, a time-out, the memory limit,
the log cap, a checked download — is the agent's own work on that Python. One build is real:
a C extension linking zlib, built by pip 20.3.4 (the pinned frontend) with setuptools 44.1.1.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from piwheels_ctl.agent import agent
from piwheels_ctl.builds.tags import MACHINE_ELF
from piwheels_ctl.farm.agentcall import check_answer

from debian_roots import debian_root, install_packages, run_in_root
from helpers import wait_gone
from indexserver import IndexServer
from py2deps import download_py27_wheels
from sdists import make_sdist
from tlsca import make_ca

AGENT_DIR = Path(agent.__file__).parent
PACKAGES = ["python2.7", "python3", "bubblewrap", "ca-certificates"]
# What a real C build on 2.7 needs on top (installed into the cached root once).
BUILD_PACKAGES = ["python2.7-dev", "gcc", "libc6-dev", "zlib1g-dev"]
PY2_PACKAGES = Path(__file__).parent / "packages-py2"


@pytest.fixture(scope="module")
def root() -> Path:
    if shutil.which("debootstrap") is None:
        pytest.fail("debootstrap is needed (apt-get install debootstrap)", pytrace=False)
    return debian_root("bullseye", PACKAGES)


@pytest.fixture
def place(root: Path) -> Iterator[Path]:
    """A folder of this test inside the root (its path inside is the part after the root)."""
    folder = Path(tempfile.mkdtemp(prefix="agent-", dir=root / "tmp"))
    folder.chmod(0o755)
    for name in agent.MODULES:
        shutil.copy(AGENT_DIR / name, folder / name)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _inside(root: Path, path: Path) -> str:
    return "/" + str(path.relative_to(root))


def _agent(
    root: Path, place: Path, python: str, *args: str, timeout: float = 600, env: dict[str, str] | None = None
) -> dict[str, object]:
    done = run_in_root(root, [python, _inside(root, place / "agent.py"), *args], timeout=timeout, env=env)
    lines = done.stdout.strip().splitlines()
    assert lines, f"the agent printed nothing (exit {done.returncode}): {done.stderr[-2000:]}"
    result: dict[str, object] = json.loads(lines[-1])
    return result


def _fake_python(root: Path, place: Path, body: str) -> str:
    """A fake interpreter whose ``-m pip wheel`` runs ``body``; the relay goes to the root's Python 3."""
    script = place / "fake" / "bin" / "python"
    script.parent.mkdir(parents=True)
    script.write_text(f'#!/bin/sh\n[ "$1" = "-m" ] || exec /usr/bin/python3 "$@"\n{body}\n')
    script.chmod(0o755)
    return _inside(root, script)


def _build(root: Path, place: Path, body: str, *extra: str, python: str = "python2.7") -> dict[str, object]:
    fake = _fake_python(root, place, body)
    inside = _inside(root, place)
    return _agent(
        root, place, python, "build", "--python", fake, "--name", "demo", "--version", "1.0",
        "--outbox", f"{inside}/outbox", "--log", f"{inside}/build.log", "--work-root", f"{inside}/work",
        *extra,
    )  # fmt: skip


def _log(place: Path) -> str:
    return (place / "build.log").read_text(errors="replace")


@pytest.mark.parametrize(
    ("python", "tags"), [("python2.7", ("cp27", "cp27mu")), ("python3.9", ("cp39", "cp39"))]
)
def test_the_agent_probes_each_python_of_the_release(
    root: Path, place: Path, python: str, tags: tuple[str, str]
) -> None:
    probe = _agent(root, place, python, "probe")
    assert (probe["python_tag"], probe["abi_tag"]) == tags, probe
    assert probe["sandbox"] == "bubblewrap namespaces (a uid of its own)", probe


def test_a_failing_build_on_python_2_7(root: Path, place: Path) -> None:
    result = _build(root, place, "echo compiling; echo 'error: it went wrong' >&2; exit 1")
    assert result["status"] == "failed" and result["returncode"] == 1 and result["sandbox"] == "bwrap", result
    assert "compiling" in _log(place) and "error: it went wrong" in _log(place)
    assert list((place / "work").glob("build-*")) == [], "the build's folder was left behind"


def test_a_time_out_on_python_2_7_kills_every_process(root: Path, place: Path) -> None:
    token = "1000.2741"
    body = f"setsid sh -c 'trap \"\" TERM; sleep {token}' & trap '' TERM; sleep {token}"
    started = time.monotonic()
    result = _build(root, place, body, "--timeout", "3")
    assert result["timed_out"] is True and result["status"] == "failed", result
    assert time.monotonic() - started < 120
    assert wait_gone(token) == [], "the build outlived its time limit"


def test_the_memory_limit_on_python_2_7_holds_for_the_whole_tree(root: Path, place: Path) -> None:
    child = "/usr/bin/python3 -c 'import time; x = bytearray(300 * 1024 * 1024); time.sleep(60)'"
    result = _build(root, place, "\n".join([f"{child} &"] * 4) + "\nwait", "--memory-mb", "1000")
    assert result["limit"] == "memory", (result, _log(place)[-1000:])


def test_the_log_cap_on_python_2_7(root: Path, place: Path) -> None:
    body = "echo FIRST-LINE; head -c 20000000 /dev/zero | tr '\\0' x; echo; echo LAST-LINE"
    _build(root, place, body, "--log-max-bytes", "50000")
    log = _log(place)
    assert len(log) < 51_000, len(log)
    assert "FIRST-LINE" in log and "LAST-LINE" in log and "bytes cut by piwheels-ctl" in log


def test_a_download_that_is_not_what_the_index_says_on_python_2_7(root: Path, place: Path) -> None:
    sdist = place / "demo-1.0.tar.gz"
    sdist.write_bytes(b"other bytes")
    url = "file://" + _inside(root, sdist)
    result = _build(root, place, "exit 0", "--sdist-url", url, "--sdist-sha256", "0" * 64)
    assert result["status"] == "failed" and "0" * 64 in str(result["download_error"]), result


def test_a_real_c_build_with_the_pinned_pip_on_python_2_7(root: Path, place: Path) -> None:
    install_packages(root, BUILD_PACKAGES)
    links = download_py27_wheels(place / "links")
    sdist = make_sdist(PY2_PACKAGES / "zlib-ext", place)
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    frontend = next(links.glob("pip-20.3.4-*.whl"))
    inside = _inside(root, place)
    started = time.monotonic()
    result = _agent(
        root, place, "python2.7", "build", "--python", "/usr/bin/python2.7", "--name", "zlib-ext",
        "--version", "1.0", "--outbox", f"{inside}/outbox", "--log", f"{inside}/build.log",
        "--work-root", f"{inside}/work", "--find-links", _inside(root, links),
        "--sdist-url", "file://" + _inside(root, sdist), "--sdist-sha256", digest,
        "--frontend", _inside(root, frontend),
    )  # fmt: skip
    took = time.monotonic() - started
    assert result["status"] == "success", (result, _log(place)[-3000:])
    files = result["files"]
    assert isinstance(files, list) and [f["name"] for f in files] == [
        "zlib_ext-1.0-cp27-cp27mu-linux_x86_64.whl"
    ], files
    # The root's 2.7 has no pip of its own: the build ran with the pinned one.
    assert "No module named pip" in run_in_root(root, ["python2.7", "-m", "pip", "--version"]).stderr
    assert "--use-pep517" in _log(place), _log(place)[:2000]
    # What the wheel needs from apt: libz.so.1, from bullseye's zlib1g.
    deps = {d["library"]: d["package"] for d in files[0]["deps"]}
    assert deps.get("libz.so.1") == "zlib1g", files[0]
    # The facts that say whose doing a foreign tag would be (builds/tags.py), as the controller reads them.
    machine = os.uname().machine
    elf_machine, bits = MACHINE_ELF[machine]
    assert files[0]["elf"] == [{"machine": elf_machine, "class": bits}], files[0]
    platform = {"machine": machine, "personality": None, "python_tag": "cp27", "abi_tag": "cp27mu",
                "platform_tag": f"linux_{machine}"}  # fmt: skip
    assert check_answer(result, "py27")["platform"] == platform, result
    assert took < 600, took


def _real_build(
    root: Path, place: Path, project: str, *, index_url: str | None = None, env: dict[str, str] | None = None
) -> dict[str, object]:
    """The agent on 2.7 building the fixture ``project`` of packages-py2 with the pinned pip, its
    build requirements from the wheels beside it, or from ``index_url`` (which serves them)."""
    install_packages(root, BUILD_PACKAGES)
    links = download_py27_wheels(place / "links")
    sdist = make_sdist(PY2_PACKAGES / project, place)
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    frontend = next(links.glob("pip-20.3.4-*.whl"))
    inside = _inside(root, place)
    source = ["--index-url", index_url] if index_url else ["--find-links", _inside(root, links)]
    return _agent(
        root, place, "python2.7", "build", "--python", "/usr/bin/python2.7", "--name", project,
        "--version", "1.0", "--outbox", f"{inside}/outbox", "--log", f"{inside}/build.log",
        "--work-root", f"{inside}/work", *source,
        "--sdist-url", "file://" + _inside(root, sdist), "--sdist-sha256", digest,
        "--frontend", _inside(root, frontend), env=env,
    )  # fmt: skip


def test_a_wheel_that_cannot_load_is_refused_on_python_2_7(root: Path, place: Path) -> None:
    """The load check on 2.7: the compiled module, built and linked, calls a function no library
    defines; the agent's interpreter-side check (ctypes, RTLD_NOW) refuses it in the loader's words."""
    result = _real_build(root, place, "undefined-symbol-ext")
    assert result["status"] == "failed" and result["returncode"] == 0, (result, _log(place)[-3000:])
    check = check_answer(result, "py27")["load_check"]
    assert check["ok"] is False and result["files"] == [], result
    assert check["failures"] == ["undefined_symbol_ext.so: undefined symbol: piwheels_no_such_function"], (
        check
    )
    assert list((place / "outbox").glob("*.whl")) == [], "the wheel that does not load was handed over"
    assert "[piwheels] import-failed: undefined_symbol_ext.so" in _log(place)


def test_a_missing_python_dependency_is_a_note_on_python_2_7(root: Path, place: Path) -> None:
    result = _real_build(root, place, "import-note-ext")
    assert result["status"] == "success", (result, _log(place)[-3000:])
    check = check_answer(result, "py27")["load_check"]
    assert check["ok"] is True and check["failures"] == [], check
    assert check["notes"] == [
        "import_note_ext.so: ImportError: No module named piwheels_missing_dependency"
    ], check
    assert [f["name"] for f in result["files"]] == ["import_note_ext-1.0-cp27-cp27mu-linux_x86_64.whl"]


# A build's CONNECTs to its relay, in the root's Python 3 (any Python would do).
CONNECTS = """\
import os, sys
import socket
relay = int(os.environ["https_proxy"].rsplit(":", 1)[1])
for target in sys.argv[1:]:
    tunnel = socket.create_connection(("127.0.0.1", relay), timeout=60)
    tunnel.sendall(("CONNECT %s HTTP/1.1\\r\\n\\r\\n" % target).encode())
    print("CONNECT %s -> %s" % (target, tunnel.recv(4096).decode().splitlines()[0]))
"""


def test_the_build_network_on_python_2_7(root: Path, place: Path) -> None:
    """The proxy's walls on 2.7: this machine's addresses asked of the kernel (getifaddrs through
    ctypes, and the /proc tables), the special-purpose blocks, and a build's CONNECTs refused."""
    from piwheels_ctl.agent import localaddrs

    checked = ["93.184.215.14", "203.0.113.7", "::ffff:0:93.184.215.14", "fec0::1", "64:ff9b::93.184.215.14"]
    code = (
        "import sys, json; sys.path.insert(0, sys.argv[1]); import localaddrs, netranges; "
        "print(json.dumps([localaddrs.local_addresses(), sorted(localaddrs._from_proc()), "
        "[netranges.is_public(a) for a in sys.argv[2:]]]))"
    )
    done = run_in_root(root, ["python2.7", "-c", code, _inside(root, place), *checked])
    assert done.returncode == 0, done.stderr
    asked, proc, public = json.loads(done.stdout)
    # The root shares this machine's network: the same addresses as this Python 3 asks for.
    assert asked == localaddrs.local_addresses() and set(proc) <= set(asked), (asked, proc)
    assert public == [True, False, False, False, True], dict(zip(checked, public, strict=True))

    targets = ["93.184.215.14:443", "203.0.113.7:443", "93.184.215.14:8080", "[fec0::1]:443"]
    body = f"/usr/bin/python3 - {' '.join(targets)} <<'PY'\n{CONNECTS}PY\nexit 1"
    result = _build(root, place, body, "--network-allow", "*", "--farm-address", "93.184.215.14")
    assert all(f"CONNECT {t} -> HTTP/1.1 403 Forbidden" in _log(place) for t in targets), _log(place)
    assert result["network"] == [
        "93.184.215.14:443: refused, 93.184.215.14 is an address of the farm's own machines",
        "203.0.113.7:443: refused, 203.0.113.7 is not a public address (documentation (TEST-NET-3))",
        "93.184.215.14:8080: refused, not a host builds may reach (build_network_allow)",
        "fec0::1:443: refused, fec0::1 is not a public address (site-local (deprecated))",
    ], result


TLS_HOST = "127.0.1.120"


def test_a_python_2_7_build_trusts_the_farms_store_through_an_inspecting_proxy(
    root: Path, place: Path, tmp_path: Path
) -> None:
    """pip 20.3.4 on 2.7 gets its build requirements from an HTTPS index whose CA (as a proxy
    that inspects TLS has) is only in the file SSL_CERT_FILE names: it trusts that store, not its
    vendored certifi nor what PIP_CERT and REQUESTS_CA_BUNDLE named. Without the CA, the build
    is handed back as the builder's TLS failure, not recorded as the project's unresolved
    requirement. The emulated ARM tier's 2.7 builds run this same agent code (``buildenv``)."""
    links = download_py27_wheels(place / "links")
    ca, context = make_ca(tmp_path, TLS_HOST)
    shutil.copyfile(ca, place / "proxy-ca.pem")
    (place / "proxy-ca.pem").chmod(0o644)
    system = "/etc/ssl/certs/ca-certificates.crt"  # the root's own store, without the proxy's CA
    with IndexServer(links, host=TLS_HOST, tls=context) as index:
        trusted = _real_build(root, place, "zlib-ext", index_url=index.url, env={
            "SSL_CERT_FILE": _inside(root, place / "proxy-ca.pem"), "PIP_CERT": system,
            "REQUESTS_CA_BUNDLE": system,
        })  # fmt: skip
        trusted_log = _log(place)
        shutil.rmtree(place / "outbox", ignore_errors=True)
        untrusted = _real_build(root, place, "zlib-ext", index_url=index.url)
        fetched = [path for _, path, status in index.requests if status == 200]
    assert trusted["status"] == "success", (trusted, trusted_log[-3000:])
    assert any("setuptools-44.1.1" in path for path in fetched), fetched
    assert untrusted["status"] == "error", (untrusted, _log(place)[-3000:])
    error = str(untrusted["error"])
    assert f"TLS failure with {TLS_HOST}" in error and "certificate verify failed" in error, error
    assert system in error, error
