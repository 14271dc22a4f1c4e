"""How one job runs on one builder: in-process on this machine, or through the agent over SSH."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, with_config
from sqlalchemy import select
from typing_extensions import NotRequired, TypedDict

from ..config import Settings
from ..db.engine import Database
from ..db.models import Builder, utcnow
from ..errors import PiwheelsError
from ..queue.claims import Job
from . import frontend
from .registry import ensure_local
from .transport import Connection, Endpoint, TransportError, rsync_pull, write_known_hosts

# What a remote path or interpreter may look like: no shell syntax even before quoting.
SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/+-]+$")
PROBE_KEYS = frozenset({"python_tag", "abi_tag", "platform_tag"})
BACKOFF_FIRST = timedelta(seconds=30)
BACKOFF_MAX = timedelta(minutes=15)


class BuilderError(PiwheelsError):
    """The builder, not the project, is at fault: the job goes back to the queue."""


@dataclass(frozen=True)
class Outcome:
    """A finished build: the agent's result and where its wheels and log are on this machine."""

    job: Job
    build_id: int
    result: dict[str, Any]
    outbox: Path
    log: Path


class Executor(Protocol):
    """A builder as the runner sees it."""

    builder_id: int
    name: str
    slots: int
    pythons: dict[int, str]  # ABI id -> interpreter
    retry_at: datetime | None
    failures: int

    def build(self, job: Job, build_id: int) -> Outcome: ...

    def finish(self, outcome: Outcome) -> None: ...

    def kill_all(self) -> None: ...

    def close(self) -> None: ...


@functools.cache
def agent_files() -> dict[str, bytes]:
    """The agent and the modules it imports, sent to every builder (read when first needed)."""
    from ..agent import agent

    return {name: (Path(agent.__file__).parent / name).read_bytes() for name in agent.MODULES}


def agent_hashes() -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in agent_files().items()}


def send_agent(conn: Connection, root: str) -> None:
    """Put the agent and its modules into ``root`` on the builder."""
    for name, source in agent_files().items():
        conn.put(source, f"{root}/{name}")


def pip_sources(settings: Settings) -> tuple[str | None, list[str]]:
    """The index URL and find-links a build's pip uses."""
    if settings.upstream_is_local:
        return settings.build_index_url, [settings.upstream_url, *settings.find_links]
    return settings.build_index_url or settings.upstream_url, list(settings.find_links)


def frontend_wheel(
    settings: Settings, job: Job, index_url: str | None, find_links: list[str], has_sdist: bool
) -> Path:
    """The pinned frontend (uv or pip) for ``job``'s Python; not having it is the builder's
    fault, not the project's."""
    try:
        return frontend.wheel(settings, job.abi, index_url, find_links, has_sdist)
    except frontend.FrontendError as exc:
        raise BuilderError(str(exc)) from None


def mark_failed(executor: Executor) -> None:
    """Keep a failing builder out of the rotation, for longer after each failure in a row."""
    executor.failures += 1
    delay = min(BACKOFF_FIRST * (2 ** (executor.failures - 1)), BACKOFF_MAX)
    executor.retry_at = utcnow() + delay


class LocalExecutor:
    """This machine as a builder: runs the agent's build step in-process, one thread a slot."""

    def __init__(self, settings: Settings, builder_id: int, slots: int, pythons: dict[int, str]) -> None:
        self.settings = settings
        self.builder_id = builder_id
        self.name = "local"
        self.slots = slots
        self.pythons = pythons
        self.retry_at: datetime | None = None
        self.failures = 0
        self._pids: set[int] = set()
        self._lock = threading.Lock()
        self.ccache_dir = self._prepare_ccache()

    def _prepare_ccache(self) -> str | None:
        """The ccache folder, with its size limit and settings in its ccache.conf."""
        if not self.settings.ccache:
            return None
        folder = self.settings.ccache_path.resolve()
        folder.mkdir(parents=True, exist_ok=True)
        conf = folder / "ccache.conf"
        text = f"max_size = {self.settings.ccache_max_size}\nhash_dir = false\n"
        if not conf.exists() or conf.read_text() != text:
            conf.write_text(text)
        return str(folder)

    def build(self, job: Job, build_id: int) -> Outcome:
        s = self.settings
        work = s.work_dir.resolve()
        outbox = work / "outbox" / str(build_id)
        log = work / "logs" / f"{build_id}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        index_url, find_links = pip_sources(s)
        pip = frontend_wheel(s, job, index_url, find_links, job.sdist_url is not None)
        from ..agent import agent  # the local builder's builds run in this process

        result = agent.build(
            self.pythons[job.abi_id],
            job.name,
            job.version,
            str(outbox),
            str(log),
            str(work / "builds"),
            timeout=s.build_timeout,
            memory_mb=s.build_memory_mb,
            log_max_bytes=s.log_max_kb * 1024,
            index_url=index_url,
            find_links=find_links,
            ccache_dir=self.ccache_dir,
            ccache_remote=s.ccache_remote_url,
            on_start=self._started,
            min_free_mb=s.min_free_mb,
            sandbox_kind=s.sandbox,
            max_procs=s.build_max_procs,
            sdist_url=job.sdist_url,
            sdist_sha256=job.sdist_sha256,
            frontend=str(pip),
            deps_cache=str(s.deps_cache_path.resolve()) if s.deps_cache_mb else None,
            deps_cache_mb=s.deps_cache_mb,
        )
        result = check_answer(result, "local")
        if result["status"] == "error":
            raise BuilderError(f"local: {result.get('error')}")
        return Outcome(job, build_id, result, outbox, log)

    def _started(self, pid: int) -> None:
        with self._lock:
            self._pids.add(pid)

    def finish(self, outcome: Outcome) -> None:
        shutil.rmtree(outcome.outbox, ignore_errors=True)
        outcome.log.unlink(missing_ok=True)

    def kill_all(self) -> None:
        with self._lock:
            for pid in self._pids:
                with contextlib.suppress(OSError):  # already gone
                    os.killpg(pid, signal.SIGKILL)

    def close(self) -> None:
        """Nothing to close: no connection."""


@dataclass(frozen=True)
class RemoteBuilder:
    """What the controller knows of a builder reached over SSH."""

    builder_id: int
    name: str
    endpoint: Endpoint
    root: str  # absolute folder on the builder for the agent, outboxes, work and ccache
    slots: int
    pythons: dict[int, str]
    # The root-owned folder of the agent the SSH user may run as root with sudo (the builder
    # role's, for builders where no namespaces can be made), with its own work and ccache.
    sudo_root: str | None = None
    ccache_remote: bool = False  # its probe found that its builds can use the shared compiler cache


class _FileAnswer(TypedDict):
    name: str
    size: Annotated[int, Field(ge=0)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    deps: NotRequired[list[Any]]


@with_config(ConfigDict(extra="allow"))
class _BuildAnswer(TypedDict):
    """The parts of the agent's answer to a build that the controller reads."""

    status: Literal["success", "failed", "error"]
    error: NotRequired[str]
    files: NotRequired[list[_FileAnswer]]
    duration: NotRequired[Annotated[float, Field(ge=0)]]
    timed_out: NotRequired[bool]
    limit: NotRequired[str | None]
    network: NotRequired[list[str]]
    download_error: NotRequired[str | None]
    armv6_userland: NotRequired[bool]


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


class RemoteExecutor:
    """A builder over SSH: one connection reused across its jobs, wheels brought home by rsync."""

    def __init__(self, settings: Settings, builder: RemoteBuilder, known_hosts: Path) -> None:
        self.settings = settings
        self.builder = builder
        self.builder_id = builder.builder_id
        self.name = builder.name
        self.slots = builder.slots
        self.pythons = builder.pythons
        self.retry_at: datetime | None = None
        self.failures = 0
        self.known_hosts = known_hosts
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self._frontends: set[str] = set()  # pinned pips sent over the current connection

    def _send_frontend(self, wheel: Path) -> str:
        """The path on the builder of the pinned pip ``wheel``, sent once per connection."""
        target = f"{self.builder.root}/frontends/{wheel.name}"
        conn = self.connection()
        with self._lock:
            if target not in self._frontends:
                conn.run(
                    ["mkdir", "-p", f"{self.builder.root}/frontends"], timeout=self.settings.command_timeout
                )
                conn.put(wheel.read_bytes(), target)
                self._frontends.add(target)
        return target

    def connection(self) -> Connection:
        """The builder's connection, opened (and the agent sent) on first use."""
        with self._lock:
            if self._conn is None:
                conn = Connection(self.builder.endpoint, connect_timeout=self.settings.connect_timeout)
                try:
                    root = self.builder.root
                    conn.run(["mkdir", "-p", root], timeout=self.settings.command_timeout)
                    send_agent(conn, root)
                except BaseException:
                    conn.close()
                    raise
                self._conn = conn
            return self._conn

    def build(self, job: Job, build_id: int) -> Outcome:
        s = self.settings
        root = self.builder.root
        python = self.pythons[job.abi_id]
        outbox = f"{root}/outbox/{build_id}"
        index_url, find_links = pip_sources(s)
        sudo = self.builder.sudo_root
        # Through sudo: the root-owned agent, in root's own work and ccache folders (uid fallback).
        place = sudo or root
        runner = ["sudo", "-n", python, f"{sudo}/agent/agent.py"] if sudo else [python, f"{root}/agent.py"]
        argv = [
            *runner, "build", "--python", python,
            "--name", job.name, "--version", job.version,
            "--outbox", outbox, "--log", f"{outbox}/build.log", "--work-root", f"{place}/work",
            "--timeout", str(s.build_timeout), "--memory-mb", str(s.build_memory_mb),
            "--log-max-bytes", str(s.log_max_kb * 1024), "--min-free-mb", str(s.min_free_mb),
            "--sandbox", s.sandbox, "--max-procs", str(s.build_max_procs),
        ]  # fmt: skip
        if s.ccache:
            argv += ["--ccache-dir", f"{place}/ccache"]
            if s.ccache_remote_url and self.builder.ccache_remote:
                argv += ["--ccache-remote", s.ccache_remote_url]
        if s.deps_cache_mb:
            argv += ["--deps-cache", f"{place}/deps-cache", "--deps-cache-mb", str(s.deps_cache_mb)]
        if index_url:
            argv += ["--index-url", index_url]
        # Only a URL the builder can fetch: not a file: one (a folder of this machine's, in any
        # spelling), nor another scheme an upstream page might give.
        sends_sdist = urlsplit(str(job.sdist_url or "")).scheme in ("http", "https")
        if sends_sdist:
            argv += ["--sdist-url", str(job.sdist_url)]
            if job.sdist_sha256:
                argv += ["--sdist-sha256", job.sdist_sha256]
        for link in find_links:
            argv += ["--find-links", link]
        pip = frontend_wheel(s, job, index_url, find_links, sends_sdist)
        try:
            argv += ["--frontend", self._send_frontend(pip)]
            done = self.connection().run(argv, timeout=s.build_timeout + s.command_timeout)
            result = check_answer(parse_result(done.stdout, self.name), self.name)
            if result["status"] == "error":
                raise BuilderError(f"{self.name}: {result.get('error')}")
            incoming = s.data_dir.resolve() / "incoming" / self.name / str(build_id)
            incoming.mkdir(parents=True, exist_ok=True)
            rsync_pull(
                self.builder.endpoint,
                outbox,
                incoming,
                timeout=s.command_timeout + s.build_timeout / 10,
                known_hosts=self.known_hosts,
            )
        except TransportError as exc:
            self.reset()
            raise BuilderError(f"{self.name}: {exc}") from exc
        return Outcome(job, build_id, result, incoming, incoming / "build.log")

    def finish(self, outcome: Outcome) -> None:
        """Remove the build's outbox on the builder, once its outcome is recorded, then ours."""
        outbox = f"{self.builder.root}/outbox/{outcome.build_id}"
        try:
            self.connection().run(["rm", "-rf", "--", outbox], timeout=self.settings.command_timeout)
        except TransportError:
            self.reset()  # the outbox stays; the next check of the builder reports it
        shutil.rmtree(outcome.outbox, ignore_errors=True)

    def reset(self) -> None:
        """Drop the connection: the next job opens a new one."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
                self._frontends.clear()

    def kill_all(self) -> None:
        """Closing the connection ends the agents; their builds hit their own time limits."""
        self.reset()

    def close(self) -> None:
        self.reset()


def open_executors(db: Database, settings: Settings) -> list[Executor]:
    """An executor for the local builder (if enabled) and for every registered SSH builder."""
    executors: list[Executor] = []
    known_hosts = settings.data_dir.resolve() / "known_hosts"
    with db.session() as session:
        if settings.local_builder:
            local = ensure_local(session, settings)
            pythons = {p.abi_id: p.path for p in local.pythons}
            executors.append(LocalExecutor(settings, local.id, local.slots, pythons))
        remotes = [
            remote_builder(b) for b in session.scalars(select(Builder).where(Builder.host.is_not(None)))
        ]
    write_known_hosts(known_hosts, [r.endpoint for r in remotes])
    executors += [RemoteExecutor(settings, r, known_hosts) for r in remotes if r.pythons]
    return executors


def remote_builder(builder: Builder) -> RemoteBuilder:
    """The connection details and interpreters of a registered SSH builder."""
    assert builder.host is not None
    return RemoteBuilder(
        builder_id=builder.id,
        name=builder.name,
        endpoint=Endpoint(
            host=builder.host,
            port=builder.port,
            user=builder.user,
            key_file=builder.key_file,
            host_key=builder.host_key,
        ),
        root=str(builder.info.get("root", "")),
        slots=builder.slots,
        pythons={p.abi_id: p.path for p in builder.pythons},
        sudo_root=builder.info.get("sudo_root"),
        ccache_remote=str(builder.info.get("ccache_remote", "")).startswith("on"),
    )
