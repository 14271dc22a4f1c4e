"""The controller's side of the agent: the files it sends, how it starts the agent, what it asks
(``agent.jobspec``) and how it reads the answer."""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, with_config
from typing_extensions import NotRequired, TypedDict

from ..abi import AbiTags
from ..agent import jobspec, localaddrs, netpolicy
from ..config import Settings
from ..errors import PiwheelsError
from .transport import Connection

# What a remote path or interpreter may look like: no shell syntax even before quoting.
SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/+-]+$")
PROBE_KEYS = frozenset(jobspec.PROBE_KEYS)


class BuilderError(PiwheelsError):
    """The builder, not the project, is at fault: the job goes back to the queue."""


@functools.cache
def agent_files() -> dict[str, bytes]:
    """The agent's modules, sent to every builder (read when first needed)."""
    from ..agent import agent

    return {name: (Path(agent.HERE) / name).read_bytes() for name in agent.MODULES}


def agent_hashes() -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in agent_files().items()}


def send_agent(conn: Connection, root: str) -> None:
    """Put the agent's modules into ``root`` on the builder."""
    for name, source in agent_files().items():
        conn.put(source, f"{root}/{name}")


def runner_argv(python: str, root: str, sudo: str | None) -> list[str]:
    """How ``python`` runs the agent: the copy sent to ``root``, or through sudo the builder role's
    root-owned one in ``sudo`` (for builders where no namespaces can be made)."""
    if sudo:
        return ["sudo", "-n", python, f"{sudo}/agent/agent.py"]
    return [python, f"{root}/agent.py"]


# A cross interpreter's key among a builder's probes: the interpreter, then the target it
# cross-builds for (``builders add --cross``); a plain interpreter's key is its path.
CROSS_SEP = " --cross "


def cross_key(python: str, target: str) -> str:
    """The probes' key of ``python`` cross-building for ``target`` (a Debian architecture)."""
    return f"{python}{CROSS_SEP}{target}"


def python_of(key: str) -> str:
    """The interpreter of a probes' key (``cross_key``'s or a plain path)."""
    return key.split(CROSS_SEP, 1)[0]


def build_argv(python: str, root: str, sudo: str | None, request: jobspec.Request) -> list[str]:
    """The command that has the agent build ``request``."""
    return [*runner_argv(python, root, sudo), "build", *jobspec.to_argv(request)]


def pip_sources(settings: Settings) -> tuple[str | None, list[str]]:
    """The index URL and find-links a build's pip uses."""
    if settings.upstream_is_local:
        return settings.build_index_url, [settings.upstream_url, *settings.find_links]
    return settings.build_index_url or settings.upstream_url, list(settings.find_links)


def build_request(settings: Settings, python: str, name: str, version: str, **fields: Any) -> jobspec.Request:
    """What the agent is asked to build: the farm's limits and package sources from ``settings``,
    and ``fields`` (the folders on the builder, the sdist, the frontend) over them."""
    index_url, find_links = pip_sources(settings)
    farm = {
        "timeout": settings.build_timeout,
        "memory_mb": settings.build_memory_mb,
        "log_max_bytes": settings.log_max_kb * 1024,
        "min_free_mb": settings.min_free_mb,
        "sandbox_kind": settings.sandbox,
        "max_procs": settings.build_max_procs,
        "ccache_remote_mb": settings.ccache_remote_build_mb,
        "ccache_remote_objects": settings.ccache_remote_build_objects,
        "index_url": index_url,
        "find_links": find_links,
        "network_allow": list(settings.build_network_allow),
        "farm_addresses": farm_addresses(settings),
        "max_load": settings.builder_max_load,
    }
    return jobspec.request(python=python, name=name, version=version, **{**farm, **fields})


def farm_addresses(settings: Settings) -> list[str]:
    """The addresses of the farm's own machines that a build must never reach: this machine's
    (the controller's: the master's on a farm), asked of the kernel, and the database's host."""
    found = set(localaddrs.local_addresses())
    host = urlsplit(settings.database_url or "").hostname
    if host:
        found.update(netpolicy.addresses_of(host))
    return sorted(found)


def probe_tag(probe: Mapping[str, Any]) -> str:
    """The ABI tag (``cp311-cp311-linux_armv7l``) of an interpreter the agent probed."""
    return AbiTags(probe["python_tag"], probe["abi_tag"], probe["platform_tag"]).tag


# One kind of ELF file in a wheel: its e_machine and class ("class" is a keyword: the functional form).
_ElfAnswer = TypedDict("_ElfAnswer", {"machine": Annotated[int, Field(ge=0)], "class": Literal[32, 64]})


class _FileAnswer(TypedDict):
    name: str
    size: Annotated[int, Field(ge=0)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    deps: NotRequired[list[Any]]
    elf: NotRequired[list[_ElfAnswer] | None]  # None: the agent could not read the wheel


class _PlatformAnswer(TypedDict):
    """The builder as the build found it (``agent.buildplatform.build_facts``)."""

    machine: str
    personality: str | None
    python_tag: NotRequired[str]
    abi_tag: NotRequired[str]
    platform_tag: NotRequired[str]


class _LoadCheckAnswer(TypedDict):
    """Every shared object of the wheels loaded on the builder (``jobspec.LOAD_CHECK_KEYS``)."""

    ok: bool
    failures: list[str]
    notes: list[str]


@with_config(ConfigDict(extra="allow"))
class _BuildAnswer(TypedDict):
    """The parts of the agent's answer to a build (``jobspec.ANSWER_KEYS``) that the controller reads."""

    status: Literal["success", "failed", "error", "busy"]
    error: NotRequired[str]
    files: NotRequired[list[_FileAnswer]]
    duration: NotRequired[Annotated[float, Field(ge=0)]]
    timed_out: NotRequired[bool]
    limit: NotRequired[str | None]
    network: NotRequired[list[str]]
    download_error: NotRequired[str | None]
    armv6_userland: NotRequired[bool]
    platform: NotRequired[_PlatformAnswer]
    load_check: NotRequired[_LoadCheckAnswer | None]  # None: no wheel was made
    load: NotRequired[float]  # with "busy": the load per CPU the builder found
    repaired: NotRequired[list[str] | None]  # the wheels auditwheel repaired; None: no repair asked


@functools.cache
def _build_answer() -> TypeAdapter[_BuildAnswer]:
    return TypeAdapter(_BuildAnswer)


def check_answer(result: dict[str, Any], who: str) -> dict[str, Any]:
    """``result`` if it has the shape of an answer to a build (strictly: no string for a number),
    else BuilderError: a builder that answers nonsense is at fault, not the project."""
    try:
        return dict(_build_answer().validate_python(result, strict=True))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"])
        problem = f"{where.lstrip('.')}: {error['msg']}"
        raise BuilderError(f"{who}: the agent's answer is malformed: {problem}") from None


def parse_result(stdout: str, who: str, keys: frozenset[str] = frozenset({"status"})) -> dict[str, Any]:
    """The agent's answer: one JSON object on the last line of its output, with ``keys``."""
    lines = stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else None
    except ValueError:
        result = None
    if not isinstance(result, dict) or not keys <= set(result):
        raise BuilderError(f"{who}: the agent gave no answer: {stdout[-300:]!r}")
    return result
