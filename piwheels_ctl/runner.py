"""Drive builds: claim jobs from the queue, keep every builder slot busy, record each outcome."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select

from . import agent
from .builders import ensure_local
from .classifier import INVALID_WHEEL, Failure, classify
from .collector import Wheel, inspect_wheel
from .config import Settings
from .database import Database
from .errors import VerifyError
from .models import Build, BuildStatus
from .queue import Job, claim, pending, pending_query, reclaim
from .recorder import record_failure, record_success

# A lease outlives the build's own time limit by this much before another controller may take it.
LEASE_MARGIN = timedelta(minutes=5)


@dataclass
class RunReport:
    """What one ``run`` did."""

    built: int = 0
    failed: int = 0
    lost: int = 0  # outcomes not recorded because the lease was handed back meanwhile
    remaining: int = 0
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (job, reason, detail)


class Progress:
    """Receives the run's progress; the CLI draws a bar from it."""

    def start(self, total: int) -> None:
        """``total`` jobs are pending as the run starts."""

    def finished(self, job: Job, ok: bool, report: RunReport) -> None:
        """One job ended (built or failed)."""


@dataclass(frozen=True)
class Outcome:
    job: Job
    build_id: int
    result: dict[str, Any]
    outbox: Path
    log: Path


class LocalBuilder:
    """This machine as a builder: runs the agent's build step in-process, one thread a slot."""

    def __init__(self, settings: Settings, pythons: dict[int, str]) -> None:
        self.settings = settings
        self.pythons = pythons
        self._pids: set[int] = set()
        self._lock = threading.Lock()
        self.ccache_dir = self.prepare_ccache()

    def prepare_ccache(self) -> str | None:
        """The ccache folder, its size limit and its settings written to its ccache.conf."""
        if not self.settings.ccache:
            return None
        folder = self.settings.ccache_path.resolve()
        folder.mkdir(parents=True, exist_ok=True)
        conf = folder / "ccache.conf"
        text = f"max_size = {self.settings.ccache_max_size}\nhash_dir = false\n"
        if not conf.exists() or conf.read_text() != text:
            conf.write_text(text)
        return str(folder)

    def pip_sources(self) -> tuple[str | None, list[str]]:
        """The index URL and find-links a build's pip uses."""
        s = self.settings
        if s.upstream_is_local:
            return s.build_index_url, [s.upstream, *s.find_links]
        return s.build_index_url or s.upstream, list(s.find_links)

    def build(self, job: Job, build_id: int) -> Outcome:
        work = self.settings.work_dir.resolve()
        outbox = work / "outbox" / str(build_id)
        log = work / "logs" / f"{build_id}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        index_url, find_links = self.pip_sources()
        result = agent.build(
            self.pythons[job.abi_id],
            job.name,
            job.version,
            str(outbox),
            str(log),
            str(work / "builds"),
            timeout=self.settings.build_timeout,
            memory_mb=self.settings.build_memory_mb,
            log_max_bytes=self.settings.log_max_kb * 1024,
            index_url=index_url,
            find_links=find_links,
            ccache_dir=self.ccache_dir,
            on_start=self._started,
        )
        return Outcome(job, build_id, result, outbox, log)

    def _started(self, pid: int) -> None:
        with self._lock:
            self._pids.add(pid)

    def kill_all(self) -> None:
        """Kill every running build's process group (the run is being stopped)."""
        with self._lock:
            for pid in self._pids:
                with contextlib.suppress(OSError):  # already gone
                    os.killpg(pid, signal.SIGKILL)


def _verify(outcome: Outcome) -> list[Wheel]:
    wheels = []
    for entry in outcome.result["files"]:
        name = str(entry["name"])
        path = outcome.outbox / os.path.basename(name)
        if os.path.basename(name) != name:
            raise VerifyError(f"{name!r}: a wheel name with path parts")
        wheels.append(
            inspect_wheel(
                path,
                name=outcome.job.name,
                version=outcome.job.version,
                size=int(entry["size"]),
                sha256=str(entry["sha256"]),
            )
        )
    return wheels


def _read_log(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


class Runner:
    """Builds until the queue is empty (or ``limit`` jobs were claimed) on the local builder."""

    def __init__(self, db: Database, settings: Settings, progress: Progress | None = None) -> None:
        self.db = db
        self.settings = settings
        self.progress = progress or Progress()

    def record(self, outcome: Outcome, report: RunReport) -> bool:
        """Verify and record one outcome; True when it was a success."""
        s = self.settings
        result = outcome.result
        ok = False
        failure: Failure | None = None
        if result["status"] == "success":
            try:
                wheels = _verify(outcome)
            except VerifyError as exc:
                failure = Failure(INVALID_WHEEL, str(exc))
            else:
                stored = record_success(
                    self.db, s.www_dir, s.logs_dir, outcome.build_id, wheels,
                    float(result["duration"]), outcome.log,
                )  # fmt: skip
                ok = True
                if not stored:
                    report.lost += 1
        else:
            failure = classify(_read_log(outcome.log), timed_out=bool(result["timed_out"]))
        if failure is not None:
            if not record_failure(
                self.db,
                s.logs_dir,
                outcome.build_id,
                failure,
                float(result["duration"]),
                outcome.log,
            ):
                report.lost += 1
            report.failures.append(
                (f"{outcome.job.name}=={outcome.job.version} ({outcome.job.abi})",
                 failure.reason, failure.detail or "")
            )  # fmt: skip
        shutil.rmtree(outcome.outbox, ignore_errors=True)
        outcome.log.unlink(missing_ok=True)
        return ok

    def _candidates(self, abi_ids: list[int], building: set[int], count: int) -> deque[Job]:
        with self.db.session() as session:
            jobs = pending(session, abi_ids=abi_ids, claimable=True, limit=count + len(building))
            return deque(j for j in jobs if j.version_id not in building)

    def run(self, limit: int | None = None) -> RunReport:
        s = self.settings
        report = RunReport()
        with self.db.session() as session:
            reclaim(session)
            builder = ensure_local(session, s.pythons, s.slots)
            builder_id, slots = builder.id, builder.slots
            pythons = {p.abi_id: p.path for p in builder.pythons}
            total = session.scalar(select(func.count()).select_from(pending_query().subquery())) or 0
        self.progress.start(total if limit is None else min(total, limit))
        local = LocalBuilder(s, pythons)
        lease = timedelta(seconds=s.build_timeout) + LEASE_MARGIN
        claimed = 0
        running: dict[Future[Outcome], Job] = {}
        candidates: deque[Job] = deque()
        refill = True
        with ThreadPoolExecutor(max_workers=slots, thread_name_prefix="build") as pool:
            try:
                while True:
                    while len(running) < slots and (limit is None or claimed < limit):
                        building = {job.version_id for job in running.values()}
                        if not candidates and refill:
                            candidates = self._candidates(list(pythons), building, slots * 4)
                            refill = bool(candidates)
                        job = next((j for j in candidates if j.version_id not in building), None)
                        if job is None:
                            break
                        candidates.remove(job)
                        with self.db.session() as session:
                            build_id = claim(session, job, builder_id, lease).id
                        running[pool.submit(local.build, job, build_id)] = job
                        claimed += 1
                    if not running:
                        break
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        job = running.pop(future)
                        ok = self.record(future.result(), report)
                        report.built += ok
                        report.failed += not ok
                        self.progress.finished(job, ok, report)
                    # What finished may cover other candidates (a pure wheel covers every ABI).
                    candidates.clear()
                    refill = True
            except BaseException:
                local.kill_all()
                self._hand_back(list(running.values()), builder_id)
                raise
        with self.db.session() as session:
            report.remaining = (
                session.scalar(select(func.count()).select_from(pending_query().subquery())) or 0
            )
        return report

    def _hand_back(self, jobs: list[Job], builder_id: int) -> None:
        """Return interrupted jobs to the queue."""
        if not jobs:
            return
        with self.db.session() as session:
            for job in jobs:
                session.execute(
                    delete(Build).where(
                        Build.version_id == job.version_id,
                        Build.abi_id == job.abi_id,
                        Build.builder_id == builder_id,
                        Build.status == BuildStatus.BUILDING,
                    )
                )
