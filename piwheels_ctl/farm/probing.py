"""What ``builders add`` and ``builders check`` learn on a builder: each interpreter's tags, its
sandbox (directly or through the builder role's sudo rule) and a real build of a tiny C
extension with its frontend (uv or the pinned pip); an interpreter that cannot build is reported
and not used."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..config import Settings
from ..db.models import utcnow
from . import frontend
from .agentcall import (
    PROBE_KEYS,
    SAFE_PATH,
    BuilderError,
    agent_hashes,
    build_argv,
    build_request,
    cross_key,
    parse_result,
    pip_sources,
    probe_tag,
    runner_argv,
    send_agent,
)
from .transport import Connection, Endpoint

# The tiny sdist every interpreter must build: a C extension (compiler, headers, setuptools and
# wheel from the build index, the pinned pip), for Python 2.7 and 3 alike.
PROBE_NAME, PROBE_VERSION = "piwheels-probe", "1.0"
PROBE_FILES = {
    "setup.py": (
        "from setuptools import Extension, setup\n\n"
        'setup(name="piwheels-probe", version="1.0", '
        'ext_modules=[Extension("piwheels_probe", ["piwheels_probe.c"])])\n'
    ),
    "piwheels_probe.c": (
        "#include <Python.h>\n\n"
        "static PyMethodDef methods[] = {{NULL, NULL, 0, NULL}};\n\n"
        "#if PY_MAJOR_VERSION >= 3\n"
        'static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "piwheels_probe", NULL, -1, methods};\n'
        "PyMODINIT_FUNC PyInit_piwheels_probe(void) { return PyModule_Create(&module); }\n"
        "#else\n"
        'PyMODINIT_FUNC initpiwheels_probe(void) { Py_InitModule("piwheels_probe", methods); }\n'
        "#endif\n"
    ),
    "PKG-INFO": "Metadata-Version: 1.1\nName: piwheels-probe\nVersion: 1.0\n",
}
# Emulated builders (qemu-user) take a minute for what a Pi does in seconds.
PROBE_BUILD_TIMEOUT = 900.0
# What a builder that cannot make namespaces needs (an emulated host, an old kernel).
NO_SANDBOX_FIX = (
    "; builds here need the builder role's sudo agent: set builder_sudo_agent: true (or leave it"
    " at auto) for this host and run playbooks/builders.yml, or give builders add"
    " --sudo-agent the folder of a root-owned agent"
)


def probe_sdist() -> bytes:
    """The tiny sdist, the same bytes every time."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name, text in sorted(PROBE_FILES.items()):
            data = text.encode()
            info = tarfile.TarInfo(f"piwheels_probe-1.0/{name}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            archive.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


@dataclass(frozen=True)
class Probe:
    """What ``builders check`` learns on a builder, on the builder itself."""

    root: str
    pythons: dict[str, dict[str, Any]]  # interpreter -> the agent's probe (tags)
    info: dict[str, Any]
    refused: dict[str, str]  # interpreter -> why it cannot build here


def _sudo_probe(
    conn: Connection, python: str, root: str, sudo_root: str, who: str, timeout: float
) -> dict[str, Any]:
    """The root-owned agent's probe through sudo, checked to be this controller's agent."""
    runner = runner_argv(python, root, sudo_root)
    done = conn.run([*runner, "probe"], timeout=timeout)
    if done.exit_code != 0:
        raise BuilderError(f"{who}: {' '.join(runner)}: {last_lines(done.stderr, 300)}")
    probe = parse_result(done.stdout, who, PROBE_KEYS)
    theirs = probe.get("modules") or {}
    stale = sorted(name for name, digest in agent_hashes().items() if theirs.get(name) != digest)
    if stale:
        raise BuilderError(
            f"{who}: the root-owned agent in {sudo_root}/agent is not this controller's "
            f"({', '.join(stale)} differ): run the builder role again"
        )
    return probe


def last_lines(text: str, limit: int, cut: bool = False) -> str:
    """The last whole lines of ``text`` within ``limit`` characters, each kept from its first word
    (``cut``: ``text`` is a tail whose first line may be cut off, and is dropped); a last line
    longer than ``limit`` loses its middle, never its start."""
    lines = [line.strip() for line in text.strip().splitlines()]
    if cut and len(lines) > 1:
        lines = lines[1:]
    kept: list[str] = []
    for line in reversed([line for line in lines if line]):
        if kept and sum(len(k) + 1 for k in kept) + len(line) > limit:
            break
        kept.insert(0, line)
    if not kept:
        return ""
    if len(kept[0]) > limit:
        half = (limit - 3) // 2
        kept[0] = f"{kept[0][:half]} … {kept[0][-half:]}"
    return " / ".join(kept)


def _probe_build(
    conn: Connection, settings: Settings, root: str, python: str, probe: dict[str, Any], sudo: str | None
) -> str | None:
    """Build the tiny sdist with ``python`` as a job would be built (its frontend: uv or the pinned
    pip); None if a right wheel came out, else what went wrong."""
    tags = probe_tag(probe)
    index_url, find_links = pip_sources(settings)
    try:
        frontend_whl = frontend.wheel(settings, tags, index_url, find_links)
    except frontend.FrontendError as exc:
        return str(exc)
    timeout = settings.command_timeout
    sdist = probe_sdist()
    place = f"{root}/probe/{hashlib.sha256(python.encode()).hexdigest()[:12]}"
    conn.run(["rm", "-rf", "--", place], timeout=timeout)
    conn.run(["mkdir", "-p", f"{place}/outbox", f"{root}/frontends"], timeout=timeout)
    conn.put(sdist, f"{place}/piwheels_probe-1.0.tar.gz")
    conn.put(frontend_whl.read_bytes(), f"{root}/frontends/{frontend_whl.name}")
    request = build_request(
        settings,
        python,
        PROBE_NAME,
        PROBE_VERSION,
        outbox=f"{place}/outbox",
        log_path=f"{place}/build.log",
        work_root=f"{sudo or root}/work",
        timeout=PROBE_BUILD_TIMEOUT,
        frontend=f"{root}/frontends/{frontend_whl.name}",
        sdist_url=f"file://{place}/piwheels_probe-1.0.tar.gz",
        sdist_sha256=hashlib.sha256(sdist).hexdigest(),
    )
    try:
        done = conn.run(build_argv(python, root, sudo, request), timeout=PROBE_BUILD_TIMEOUT + timeout)
        result = parse_result(done.stdout, python)
        wanted = f"piwheels_probe-1.0-{tags}.whl"
        names = [str(f.get("name")) for f in result.get("files") or []]
        if result["status"] == "success" and names == [wanted]:
            return None
        if result["status"] == "error":
            return f"cannot build: {result.get('error')}"
        if names:
            return f"built {', '.join(names)}, not {wanted}"
        log = conn.run(["tail", "-c", "4000", f"{place}/build.log"], timeout=timeout).stdout
        return f"cannot build a tiny C extension: {last_lines(log, 600, cut=True)}"
    except BuilderError as exc:
        return str(exc)
    finally:
        conn.run(["rm", "-rf", "--", place], timeout=timeout)


def _remote_cache(conn: Connection, settings: Settings, root: str, probes: dict[str, dict[str, Any]]) -> str:
    """Whether the builder's builds use the farm's shared compiler cache: "on (...)" or "off: why"."""
    if not settings.ccache or not settings.ccache_remote_url:
        return "off: not configured"
    if not probes:
        return "off: no interpreter"
    python, probe = next(iter(probes.items()))
    if not str(probe.get("sandbox", "")).startswith("bubblewrap"):
        # Without a network namespace a build could reach the cache by itself, past its proxy.
        return "off: builds here have no network sandbox (bubblewrap)"
    argv = [python, f"{root}/remotecache.py", "check", settings.ccache_remote_url]
    done = conn.run(argv, timeout=settings.command_timeout)
    try:
        return str(parse_result(done.stdout, python, frozenset({"ccache_remote"}))["ccache_remote"])
    except BuilderError as exc:
        return f"off: {exc}"


def _cross_probe(
    conn: Connection, python: str, root: str, sudo: str | None, target: str, who: str, timeout: float
) -> dict[str, Any] | str:
    """The agent's ``probe --cross target`` with ``python``: the target's tags with the cross
    mark, or why it cannot cross-build there."""
    done = conn.run([*runner_argv(python, root, sudo), "probe", "--cross", target], timeout=timeout)
    if done.exit_code != 0:
        return f"cannot run the agent: {done.stderr.strip()[-300:]}"
    try:
        answer = parse_result(done.stdout, who, frozenset())
        if answer.get("status") == "error":
            return str(answer.get("error"))
        return parse_result(done.stdout, who, PROBE_KEYS)
    except BuilderError as exc:
        return str(exc)


def probe_remote(
    settings: Settings,
    endpoint: Endpoint,
    pythons: Sequence[str],
    root: str | None = None,
    sudo_root: str | None = None,
    build: bool = True,
    cross: Sequence[str] = (),
) -> Probe:
    """Connect, send the agent, and ask each interpreter for its tags and (``build``) to build a
    tiny C extension; also disk, load and ccache.

    ``root`` is the builder's folder (default ``~/piwheels``). Where the unprivileged agent finds
    no sandbox and ``sudo_root`` holds the builder role's root-owned agent, builds go through
    sudo; an interpreter that can build neither way is refused (reported, not used). Each
    interpreter that builds is also asked for each of ``cross`` (Debian architectures): the
    target's tags it cross-builds, under ``cross_key`` (refused where the toolchain or the
    target's Python is missing).
    """
    timeout = settings.command_timeout
    with Connection(endpoint, connect_timeout=settings.connect_timeout) as conn:
        if root is None:
            home = conn.run(["sh", "-c", 'echo "$HOME"'], timeout=timeout).stdout.strip()
            root = f"{home.rstrip('/')}/piwheels"
        if not SAFE_PATH.match(root + "/") or (sudo_root is not None and not SAFE_PATH.match(sudo_root)):
            raise BuilderError(f"{endpoint.host}: unusable builder folder {root!r} / {sudo_root!r}")
        conn.run(["mkdir", "-p", f"{root}/outbox", f"{root}/work", f"{root}/ccache"], timeout=timeout)
        send_agent(conn, root)
        probes: dict[str, dict[str, Any]] = {}
        refused: dict[str, str] = {}
        use_sudo = False
        for python in pythons:
            done = conn.run(
                [*runner_argv(python, root, None), "probe", "--sandbox", settings.sandbox], timeout=timeout
            )
            who = f"{endpoint.host}: {python}"
            if done.exit_code != 0:
                refused[python] = f"cannot run the agent: {last_lines(done.stderr, 300)}"
                continue
            probe = parse_result(done.stdout, who, PROBE_KEYS)
            if str(probe.get("sandbox", "")).startswith("none") and sudo_root is not None:
                probe = _sudo_probe(conn, python, root, sudo_root, who, timeout)
                use_sudo = True
            if str(probe.get("sandbox", "")).startswith("none"):
                refused[python] = f"cannot build: {probe['sandbox']}" + ("" if use_sudo else NO_SANDBOX_FIX)
                continue
            if probe.get("unreadable"):
                refused[python] = f"the builds' own uids cannot run it: {probe['unreadable']}"
                continue
            if build:
                started = time.monotonic()
                problem = _probe_build(conn, settings, root, python, probe, sudo_root if use_sudo else None)
                if problem is not None:
                    refused[python] = problem
                    continue
                probe["build_check"] = f"a tiny C extension built in {time.monotonic() - started:.0f} s"
            probe["frontend"] = str(frontend.choose(settings, probe_tag(probe)))
            probes[python] = probe
        for python in list(probes) if cross else ():
            for target in cross:
                who = f"{endpoint.host}: {python} --cross {target}"
                said = _cross_probe(conn, python, root, sudo_root if use_sudo else None, target, who, timeout)
                if isinstance(said, str):
                    refused[cross_key(python, target)] = said
                else:
                    said["frontend"] = str(frontend.choose(settings, probe_tag(said)))
                    probes[cross_key(python, target)] = said
        df = conn.run(["df", "-Pk", root], timeout=timeout).stdout.splitlines()
        load = conn.run(["cat", "/proc/loadavg"], timeout=timeout).stdout.split()
        stats = conn.run(["env", f"CCACHE_DIR={root}/ccache", "ccache", "-s"], timeout=timeout)
        remote = _remote_cache(conn, settings, root, probes)
    if not probes:
        raise BuilderError(f"{endpoint.host}: no interpreter can build: " + "; ".join(
            f"{python}: {why}" for python, why in refused.items()))  # fmt: skip
    first = next(iter(probes.values()))
    info = {
        "root": root,
        "sudo_root": sudo_root if use_sudo else None,
        "sandbox": first.get("sandbox", "unknown"),
        "refused": refused,
        "machine": first.get("machine"),
        # What the builder is (``jobspec.OS_KEYS``): read with ``db.builder_os.builder_os``.
        "os": first.get("os"),
        "armv6_userland": any(p.get("armv6_userland") for p in probes.values() if not p.get("cross")),
        # ABI tag -> the Debian architecture it is cross-built for (``set_pythons`` keeps it too).
        "cross": {
            probe_tag(p): p["cross"]["target"] for p in probes.values() if isinstance(p.get("cross"), dict)
        },
        "free_mb": int(df[-1].split()[3]) // 1024 if len(df) > 1 else None,
        "load": float(load[0]) if load else None,
        "ccache": stats.stdout.strip() if stats.exit_code == 0 else "ccache not installed",
        "ccache_remote": remote,
        "checked_at": utcnow().isoformat(),
    }
    return Probe(root, probes, info, refused)
