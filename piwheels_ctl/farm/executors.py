"""How one job runs on one builder: in-process on this machine, or through the agent over SSH."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from sqlalchemy import select

from ..config import Settings
from ..db.engine import Database
from ..db.models import Builder, utcnow
from ..queue.checks import CheckJob
from ..queue.claims import Job
from ..queue.releases import release_of
from . import frontend
from .agentcall import (
    BuilderError,
    build_argv,
    build_request,
    check_answer,
    parse_result,
    pip_sources,
    send_agent,
)
from .registry import ensure_local
from .transport import Connection, Endpoint, TransportError, rsync_pull, write_known_hosts

BACKOFF_FIRST = timedelta(seconds=30)
BACKOFF_MAX = timedelta(minutes=15)


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
    release: str | None  # its OS release (codename), whose check jobs it takes
    # ABI id -> the Debian architecture it cross-builds for: those ABIs' builds are cross builds,
    # and it takes no check job of them (it cannot load their code).
    cross: dict[int, str]

    def build(self, job: Job, build_id: int, timeout: float | None = None) -> Outcome:
        """Build ``job`` (within ``timeout`` seconds, else the farm's ``build_timeout``); an
        answer with status "busy" is an outcome too: the builder started nothing."""
        ...

    def check(self, job: CheckJob, wheel: Path) -> dict[str, Any]: ...

    def finish(self, outcome: Outcome) -> None: ...

    def kill_all(self) -> None: ...

    def close(self) -> None: ...


def mark_failed(executor: Executor) -> None:
    """Keep a failing builder out of the rotation, for longer after each failure in a row."""
    executor.failures += 1
    delay = min(BACKOFF_FIRST * (2 ** (executor.failures - 1)), BACKOFF_MAX)
    executor.retry_at = utcnow() + delay


class LocalExecutor:
    """This machine as a builder: runs the agent's build step in-process, one thread a slot."""

    def __init__(
        self,
        settings: Settings,
        builder_id: int,
        slots: int,
        pythons: dict[int, str],
        release: str | None = None,
    ) -> None:
        self.settings = settings
        self.release = release
        self.cross: dict[int, str] = {}  # this machine's own interpreters only
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

    def build(self, job: Job, build_id: int, timeout: float | None = None) -> Outcome:
        s = self.settings
        work = s.work_dir.resolve()
        outbox = work / "outbox" / str(build_id)
        log = work / "logs" / f"{build_id}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        index_url, find_links = pip_sources(s)
        # A folder upstream's own files are read from it; a file: URL an index's page gave is not.
        sdist_url, sdist_sha256 = sdist_to_send(job, files=s.upstream_is_local)
        frontend_whl = frontend.job_wheel(s, job, index_url, find_links, sdist_url is not None)
        request = build_request(
            s,
            self.pythons[job.abi_id],
            job.name,
            job.version,
            outbox=str(outbox),
            log_path=str(log),
            work_root=str(work / "builds"),
            ccache_dir=self.ccache_dir,
            ccache_remote=s.ccache_remote_url,
            sdist_url=sdist_url,
            sdist_sha256=sdist_sha256,
            frontend=str(frontend_whl),
            repair_tools=[str(w) for w in frontend.job_repair_tools(s, job, index_url, find_links, None)],
            deps_cache=str(s.deps_cache_path.resolve()) if s.deps_cache_mb else None,
            deps_cache_mb=s.deps_cache_mb,
            timeout=timeout or s.build_timeout,
        )
        from ..agent import buildstep  # the local builder's builds run in this process

        result = check_answer(buildstep.build(request, on_start=self._started), "local")
        if result["status"] == "error":
            raise BuilderError(f"local: {result.get('error')}")
        return Outcome(job, build_id, result, outbox, log)

    def check(self, job: CheckJob, wheel: Path) -> dict[str, Any]:
        """The load check of ``wheel`` (a file of the index) with the interpreter of its ABI."""
        work = self.settings.work_dir.resolve() / "checks" / f"{job.file_id}-{job.release}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            request = check_request(self.settings, self.pythons[job.abi_id], job, str(wheel), str(work))
            from ..agent import buildstep

            return checked(check_answer(buildstep.build(request, on_start=self._started), "local"), "local")
        finally:
            shutil.rmtree(work, ignore_errors=True)

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
    cross: dict[int, str] = field(default_factory=dict)  # ABI id -> the target it cross-builds for
    machine: str | None = None  # its own machine (uname -m), where a cross build's frontend runs
    release: str | None = None  # its OS release, as its last probe said
    repair: str | None = None  # its own ``repair`` setting (builders add --repair); None: the farm's


class RemoteExecutor:
    """A builder over SSH: one connection reused across its jobs, wheels brought home by rsync."""

    def __init__(self, settings: Settings, builder: RemoteBuilder, known_hosts: Path) -> None:
        self.settings = settings
        self.builder = builder
        self.builder_id = builder.builder_id
        self.release = builder.release
        self.name = builder.name
        self.slots = builder.slots
        self.pythons = builder.pythons
        self.cross = builder.cross
        self.retry_at: datetime | None = None
        self.failures = 0
        self.known_hosts = known_hosts
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self._frontends: set[str] = set()  # pinned frontends' wheels sent over the current connection

    def _send_frontend(self, wheel: Path) -> str:
        """The path on the builder of the pinned frontend's ``wheel`` (uv's or pip's), sent once per
        connection."""
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

    def build(self, job: Job, build_id: int, timeout: float | None = None) -> Outcome:
        s = self.settings
        limit = timeout or s.build_timeout
        root = self.builder.root
        python = self.pythons[job.abi_id]
        outbox = f"{root}/outbox/{build_id}"
        index_url, find_links = pip_sources(s)
        sudo = self.builder.sudo_root
        # Through sudo: the root-owned agent, in root's own work and ccache folders (uid fallback).
        place = sudo or root
        # Only a URL the builder can fetch: not a file: one (a folder of this machine's, in any
        # spelling), nor another scheme an upstream page might give.
        sdist_url, sdist_sha256 = sdist_to_send(job, files=False)
        target = self.cross.get(job.abi_id)
        # A cross build's frontend runs on the builder's own machine, not the target's.
        runs_on = job if target is None else replace(job, abi=native_abi(job.abi, self.builder.machine))
        frontend_whl = frontend.job_wheel(s, runs_on, index_url, find_links, sdist_url is not None)
        # A cross-built wheel links the target's libraries: auditwheel on the builder cannot graft them.
        repair = (
            frontend.job_repair_tools(s, job, index_url, find_links, self.builder.repair)
            if target is None
            else []
        )
        try:
            request = build_request(
                s,
                python,
                job.name,
                job.version,
                outbox=outbox,
                log_path=f"{outbox}/build.log",
                work_root=f"{place}/work",
                ccache_dir=f"{place}/ccache" if s.ccache else None,
                ccache_remote=s.ccache_remote_url if s.ccache and self.builder.ccache_remote else None,
                sdist_url=sdist_url,
                sdist_sha256=sdist_sha256,
                frontend=self._send_frontend(frontend_whl),
                repair_tools=[self._send_frontend(w) for w in repair],
                deps_cache=f"{place}/deps-cache" if s.deps_cache_mb else None,
                deps_cache_mb=s.deps_cache_mb,
                timeout=limit,
                cross=target,
            )
            argv = build_argv(python, root, sudo, request)
            done = self.connection().run(argv, timeout=limit + s.command_timeout)
            result = check_answer(parse_result(done.stdout, self.name), self.name)
            if result["status"] == "error":
                raise BuilderError(f"{self.name}: {result.get('error')}")
            incoming = s.data_dir.resolve() / "incoming" / self.name / str(build_id)
            incoming.mkdir(parents=True, exist_ok=True)
            if result["status"] == "busy":  # nothing was built: no outbox to bring home
                return Outcome(job, build_id, result, incoming, incoming / "build.log")
            rsync_pull(
                self.builder.endpoint,
                outbox,
                incoming,
                timeout=s.command_timeout + limit / 10,
                known_hosts=self.known_hosts,
            )
        except TransportError as exc:
            self.reset()
            raise BuilderError(f"{self.name}: {exc}") from exc
        return Outcome(job, build_id, result, incoming, incoming / "build.log")

    def check(self, job: CheckJob, wheel: Path) -> dict[str, Any]:
        """The load check of ``wheel`` on the builder: sent to a folder of its own, checked with
        the interpreter of its ABI, the folder removed."""
        s = self.settings
        work = f"{self.builder.root}/checks/{job.file_id}-{job.release}"
        try:
            conn = self.connection()
            conn.run(["rm", "-rf", "--", work], timeout=s.command_timeout)
            conn.run(["mkdir", "-p", f"{work}/outbox"], timeout=s.command_timeout)
            conn.put(wheel.read_bytes(), f"{work}/{wheel.name}")
            python = self.pythons[job.abi_id]
            req = check_request(s, python, job, f"{work}/{wheel.name}", work)
            sudo = self.builder.sudo_root  # through sudo: in root's own work folder, as a build
            argv = build_argv(python, self.builder.root, sudo, req._replace(work_root=f"{sudo or work}/work"))
            done = conn.run(argv, timeout=s.build_timeout + s.command_timeout)
            conn.run(["rm", "-rf", "--", work], timeout=s.command_timeout)
        except TransportError as exc:
            self.reset()
            raise BuilderError(f"{self.name}: {exc}") from exc
        return checked(check_answer(parse_result(done.stdout, self.name), self.name), self.name)

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


def check_request(settings: Settings, python: str, job: CheckJob, wheel: str, work: str) -> Any:
    """What the agent is asked for a check job: the load check of ``wheel`` only, in ``work``."""
    return build_request(
        settings,
        python,
        job.project,
        job.version,
        outbox=f"{work}/outbox",
        log_path=f"{work}/check.log",
        work_root=f"{work}/work",
        check_wheel=wheel,
    )


def checked(result: dict[str, Any], name: str) -> dict[str, Any]:
    """The ``load_check`` of a check job's answer; an answer without one is the builder's fault."""
    check = result.get("load_check")
    if result["status"] != "success" or not isinstance(check, dict):
        raise BuilderError(f"{name}: the check job did not run: {result.get('error') or result['status']}")
    return check


def sdist_to_send(job: Job, *, files: bool) -> tuple[str | None, str | None]:
    """The sdist URL and sha256 the agent fetches: an http(s) URL, or with ``files`` a ``file:``
    one; otherwise (None, None), and the build asks the build index for the version."""
    schemes = ("http", "https", "file") if files else ("http", "https")
    if job.sdist_url is None or urlsplit(job.sdist_url).scheme.lower() not in schemes:
        return None, None
    return job.sdist_url, job.sdist_sha256 or None


def open_executors(db: Database, settings: Settings) -> list[Executor]:
    """An executor for the local builder (if enabled) and for every registered SSH builder."""
    executors: list[Executor] = []
    known_hosts = settings.data_dir.resolve() / "known_hosts"
    with db.session() as session:
        if settings.local_builder:
            local = ensure_local(session, settings)
            pythons = {p.abi_id: p.path for p in local.pythons}
            executors.append(LocalExecutor(settings, local.id, local.slots, pythons, release_of(local.info)))
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
        release=release_of(builder.info),
        repair=builder.info.get("repair"),
        cross=cross_abis(builder),
        machine=builder.info.get("machine"),
    )


def native_abi(abi: str, machine: str | None) -> str:
    """``abi`` with the platform of the builder's own ``machine`` (a cross builder's frontend)."""
    return re.sub(r"-linux_[a-z0-9_]+$", f"-linux_{machine or 'x86_64'}", abi)


def cross_abis(builder: Builder) -> dict[int, str]:
    """ABI id -> the Debian architecture ``builder`` cross-builds it for (``info["cross"]``, by
    ABI tag, from its probes)."""
    targets = builder.info.get("cross") or {}
    return {p.abi_id: str(targets[p.abi.tag]) for p in builder.pythons if p.abi.tag in targets}
