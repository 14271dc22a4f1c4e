"""Drive builds: claim jobs from the queue, keep every builder slot busy, record each outcome."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from ..config import Settings
from ..db.builder_os import builder_os
from ..db.engine import Database
from ..db.models import Build, Builder, BuildStatus, utcnow
from ..errors import ArrivalError, VerifyError
from ..farm.agentcall import BuilderError
from ..farm.executors import Executor, Outcome, mark_failed
from ..queue import claims, upkeep
from ..queue.checks import CheckJob
from ..queue.claims import Job, claim_next, reclaim
from . import retry
from .answer import answered_ccache, answered_load_check, read_log, verify_answer
from .checks import finish_check, next_check, wheel_of

# What verifies, classifies and records an outcome is imported with the first outcome: a run
# with nothing to build (`run` from cron, `run --forever` between releases) never needs it.
if TYPE_CHECKING:
    from ..failures.classify import Failure
    from ..failures.hints import Hints

log = logging.getLogger(__name__)

# A lease outlives the build's own time limit by this much before another controller may take it.
LEASE_MARGIN = timedelta(minutes=5)
# How long to wait for a build before looking again at builders that were in back-off.
POLL = 5.0


@dataclass
class RunReport:
    """What one ``run`` did."""

    built: int = 0
    failed: int = 0
    handed_back: int = 0  # jobs returned to the queue because their builder failed
    lost: int = 0  # outcomes not recorded because the lease was handed back meanwhile
    remaining: int = 0
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (job, reason, detail)
    builder_errors: list[str] = field(default_factory=list)
    # (job, last error) of jobs recorded as builder-fault: handed back too many times in a row.
    builder_faults: list[tuple[str, str]] = field(default_factory=list)
    # (file, OS release, "passed" / "refused" / "handed back") of the check jobs run.
    checks: list[tuple[str, str, str]] = field(default_factory=list)
    retried: list[tuple[str, str]] = field(default_factory=list)  # (job, note): built again after a time-out
    busy: list[str] = field(default_factory=list)  # builders that refused a build for their load
    # Jobs whose cross build failed: their projects go to native builders, the jobs back to the queue.
    cross_failed: list[str] = field(default_factory=list)


class Progress:
    """Receives the run's progress; the CLI draws a bar from it."""

    def start(self, total: int) -> None:
        """``total`` jobs are pending as the run starts."""

    def started(self, job: Job, executor_name: str) -> None:
        """The build of ``job`` was handed to the builder named ``executor_name``."""

    def finished(self, job: Job, ok: bool, report: RunReport) -> None:
        """One job ended (built or failed)."""

    def retried(self, job: Job, executor_name: str) -> None:
        """``job`` timed out and is built again, on the builder named ``executor_name``."""

    def abandoned(self, job: Job) -> None:
        """A started job ended without an outcome of this run: its builder failed it and it went
        back to the queue, or another controller had taken its lease meanwhile."""


def count_pending(db: Database) -> int:
    with db.reader() as session:
        return claims.count(session)


class Runner:
    """Builds until the queue is empty (or ``limit`` jobs were claimed) on every available builder."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        executors: Sequence[Executor],
        progress: Progress | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.executors = list(executors)
        self.progress = progress or Progress()
        self.stopping = threading.Event()
        self._hints: dict[tuple[str, str] | None, Hints] = {}
        self.retried: dict[int, str] = {}  # build id -> its retry's note

    def hints(self, suite: str | None = None) -> Hints:
        """The package hints for failures, from the Contents index of the Debian release
        ``suite`` (the failed build's builder's), ``debian_suite`` overriding it."""
        from ..failures.hints import Hints

        settings = self.settings
        source = settings.debian_source_for(suite)
        if source not in self._hints:
            mirror, release = source or (None, None)
            self._hints[source] = Hints(
                settings.contents_dir,
                mirror,
                release,
                max_age_days=settings.contents_max_days,
                timeout=settings.http_timeout,
            )
        return self._hints[source]

    def _packages(
        self, failure: Failure, abi: str, build_id: int, text: str = ""
    ) -> list[dict[str, str]] | None:
        """The packages that would fix ``failure``, each with why, from the cached Contents index
        of the release of the build's builder only; ``text`` (the build's log) ranks the
        candidates it names first."""
        from ..failures.hints import HintsError

        with self.db.reader() as session:
            build = session.get(Build, build_id)
            said = builder_os(build.builder) if build is not None and build.builder is not None else None
        try:
            hints = self.hints(said.codename if said else None)
            return hints.suggest(failure.reason, failure.detail, abi.split("-")[-1], fetch=False, text=text)
        except (HintsError, OSError, sqlite3.Error) as exc:  # a hint is a help, never a reason to fail
            log.warning("no package hint for %s %s: %s", failure.reason, failure.detail, exc)
            return None

    def stop(self) -> None:
        """Claim nothing more; the running builds finish and are recorded (SIGTERM)."""
        self.stopping.set()

    def record(self, outcome: Outcome, report: RunReport) -> bool:
        """Verify and record one outcome; True when it was a success."""
        from ..failures.classify import INVALID_WHEEL, Failure, classify
        from .record import record_failure, record_success
        from .verify import with_platform

        s = self.settings
        result = outcome.result
        duration = float(result.get("duration", 0.0))
        failure: Failure | None = None
        text = ""
        retried = self.retried.pop(outcome.build_id, None)
        if result["status"] == "success":
            try:
                wheels = verify_answer(outcome)
                if result.get("cross"):  # its ELF headers must say the target's machine
                    from .cross import check_elf

                    check_elf(wheels, outcome.job.abi.split("-")[-1])
                if result.get("armv6_userland"):  # the agent's check: this userland is ARMv6
                    wheels += [
                        with_platform(w, "linux_armv6l") for w in wheels if w.platform_tag == "linux_armv7l"
                    ]
            except ArrivalError:
                raise  # the builder's fault, not the project's: the caller hands the job back
            except VerifyError as exc:
                failure = Failure(INVALID_WHEEL, str(exc))
            else:
                if retried:
                    retry.note_in_log(outcome.log, retried)
                if not record_success(
                    self.db,
                    s.www_dir,
                    s.logs_dir,
                    outcome.build_id,
                    wheels,
                    duration,
                    outcome.log,
                    answered_ccache(result),
                    answered_load_check(result)[1],
                    retried,
                ):
                    report.lost += 1
                return True
        else:
            text = read_log(outcome.log)
            failure = classify(
                text,
                timed_out=bool(result.get("timed_out")),
                limit=result.get("limit"),
                network=[str(n) for n in result.get("network") or ()],
                download=result.get("download_error"),
                load_check=answered_load_check(result)[0],
            )
        job = outcome.job
        if result.get("cross"):  # the cross builder's fault: a native builder's job from now on
            from .cross import cross_failed

            cross_failed(
                self.db, outcome.build_id, f"{failure.reason}: {failure.detail or failure.evidence or ''}"
            )
            report.cross_failed.append(f"{job.name}=={job.version} ({job.abi})")
            return False
        packages = self._packages(failure, job.abi, outcome.build_id, text)
        if retried:
            retry.note_in_log(outcome.log, retried)
        if not record_failure(
            self.db,
            s.logs_dir,
            outcome.build_id,
            failure,
            duration,
            outcome.log,
            packages,
            answered_ccache(result),
            retried,
        ):
            report.lost += 1
        report.failures.append(
            (f"{job.name}=={job.version} ({job.abi})", failure.reason, failure.detail or "")
        )
        return False

    def _next_job(self, executor: Executor, lease: timedelta) -> tuple[Job, int] | None:
        """Claim the next job for ``executor``'s ABIs, with the id of its build row."""
        with self.db.session() as session:
            # ABIs a cross builder of this run serves: native builders take their native-only projects.
            served = {a for e in self.executors if e is not executor and self._available(e) for a in e.cross}
            claimed = claim_next(
                session,
                list(executor.pythons),
                executor.builder_id,
                lease,
                executor.cross,
                served - set(executor.cross),
            )
            return None if claimed is None else (claimed[0], claimed[1].id)

    def _available(self, executor: Executor) -> bool:
        return executor.retry_at is None or utcnow() >= executor.retry_at

    def _set_health(self, executor: Executor, healthy: bool, error: str | None = None) -> None:
        with self.db.session() as session:
            builder = session.get(Builder, executor.builder_id)
            if builder is not None:
                builder.healthy = healthy
                builder.retry_at = executor.retry_at if not healthy else None
                if error:
                    builder.info = {**builder.info, "last_error": error}

    def run(self, limit: int | None = None) -> RunReport:
        report = RunReport()
        with self.db.session() as session:
            reclaim(session)
        total = count_pending(self.db)
        self.progress.start(total if limit is None else min(total, limit))
        lease = timedelta(seconds=self.settings.build_timeout) + LEASE_MARGIN
        claimed = 0
        running: dict[Future[Outcome], tuple[Executor, Job, int]] = {}
        # Builds that finished, verified and recorded once their slots have their next jobs:
        # recording (and writing the project's pages) no longer keeps a slot waiting.
        finished: list[tuple[Future[Outcome], Executor, Job, int]] = []
        checking: dict[Future[dict[str, Any]], tuple[Executor, CheckJob]] = {}
        busy = {id(e): 0 for e in self.executors}
        slots = sum(e.slots for e in self.executors) or 1
        with ThreadPoolExecutor(max_workers=slots, thread_name_prefix="build") as pool:
            try:
                while True:
                    waiting_for_retry = False
                    for executor in self.executors:
                        if not self._available(executor):
                            waiting_for_retry = True
                            continue
                        while (
                            busy[id(executor)] < executor.slots
                            and (limit is None or claimed < limit)
                            and not self.stopping.is_set()
                        ):
                            check = next_check(self.db, executor, lease)
                            if check is not None:  # a release's checks go before its builds
                                wheel = wheel_of(self.settings.www_dir, check)
                                checking[pool.submit(executor.check, check, wheel)] = (executor, check)
                                busy[id(executor)] += 1
                                continue
                            taken = self._next_job(executor, lease)
                            if taken is None:
                                break
                            job, build_id = taken
                            future = pool.submit(executor.build, job, build_id)
                            running[future] = (executor, job, build_id)
                            self.progress.started(job, executor.name)
                            busy[id(executor)] += 1
                            claimed += 1
                    if finished:
                        while finished:
                            self._complete(*finished[0], report)
                            del finished[0]
                        continue  # a builder found lying hands its job back: claim again
                    if not running and not checking:
                        break
                    futures: list[Future[Any]] = [*running, *checking]
                    done, _ = wait(futures, timeout=POLL if waiting_for_retry else None,
                                   return_when=FIRST_COMPLETED)  # fmt: skip
                    for ended in done:
                        if ended in checking:
                            executor, check = checking.pop(ended)
                            busy[id(executor)] -= 1
                            outcome = finish_check(self.db, self.settings.www_dir, ended, executor, check)
                            report.checks.append((check.filename, check.release, outcome))
                            continue
                        executor, job, build_id = running.pop(ended)
                        busy[id(executor)] -= 1
                        if ended.exception() is None and self._second_chance(
                            ended.result(), executor, pool, running, busy, report
                        ):
                            continue
                        if ended.exception() is None:
                            finished.append((ended, executor, job, build_id))
                        else:  # the builder's fault: it rests before anything more is claimed for it
                            self._complete(ended, executor, job, build_id, report)
            except BaseException:
                for executor in self.executors:
                    executor.kill_all()
                unrecorded = [build_id for *_rest, build_id in finished]
                self._hand_back([build_id for _e, _j, build_id in running.values()] + unrecorded)
                raise
            finally:
                for executor in self.executors:
                    executor.close()
        report.remaining = count_pending(self.db)
        return report

    def _second_chance(
        self,
        outcome: Outcome,
        executor: Executor,
        pool: ThreadPoolExecutor,
        running: dict[Future[Outcome], tuple[Executor, Job, int]],
        busy: dict[int, int],
        report: RunReport,
    ) -> bool:
        """True when ``outcome`` is not final: its builder refused it for its load (the job goes
        back, the builder rests), or it timed out the first time (built again: ``retry.plan``)."""
        job, build_id, loaded = outcome.job, outcome.build_id, outcome.result["status"] == "busy"
        longer = None if loaded else retry.retry_limit(self.settings, outcome, build_id in self.retried)
        if not loaded and longer is None:
            return False
        executor.finish(outcome)
        if loaded or self.stopping.is_set():  # no new build now; nor is the time-out final
            self._hand_back([build_id])
            if loaded:
                report.busy.append(retry.rest_loaded(self.db, executor, outcome))
            report.handed_back += not loaded
            self.progress.abandoned(job)
            return True
        free = [e for e in self.executors if self._available(e) and busy[id(e)] < e.slots]
        target, note = retry.plan(self.db, self.settings, executor, free, outcome, LEASE_MARGIN)
        self.retried[build_id] = note
        running[pool.submit(target.build, job, build_id, longer)] = (target, job, build_id)
        busy[id(target)] += 1
        report.retried.append((f"{job.name}=={job.version} ({job.abi})", note))
        self.progress.retried(job, target.name)
        return True

    def _complete(
        self, future: Future[Outcome], executor: Executor, job: Job, build_id: int, report: RunReport
    ) -> None:
        try:
            outcome = future.result()
        except BuilderError as exc:
            self._builder_failed(executor, job, build_id, str(exc), report)
            return
        try:
            ok = self.record(outcome, report)
        except ArrivalError as exc:
            self._builder_failed(executor, job, build_id, f"{executor.name}: {exc}", report)
            return
        finally:
            executor.finish(outcome)
        if executor.failures:
            executor.failures = 0
            executor.retry_at = None
            self._set_health(executor, True)
        report.built += ok
        report.failed += not ok
        self.progress.finished(job, ok, report)

    def _builder_failed(
        self, executor: Executor, job: Job, build_id: int, error: str, report: RunReport
    ) -> None:
        """The builder let the job down: rest the builder, put the job back in the queue; after
        ``builder_fault_limit`` hand-backs in a row, record it as a ``builder-fault`` instead."""
        from ..failures.classify import BUILDER_FAULT, Failure
        from .record import note_handback, record_failure

        mark_failed(executor)
        self._set_health(executor, False, error)
        report.builder_errors.append(error)
        count = note_handback(self.db, job.version_id, job.abi_id, error)
        if count < self.settings.builder_fault_limit:
            self._hand_back([build_id])
            report.handed_back += 1
            self.progress.abandoned(job)
            log.warning("%s; %s %s goes back to the queue", error, job.name, job.version)
            return
        evidence = f"handed back by builders {count} times in a row; the last time: {error}"
        if record_failure(
            self.db, self.settings.logs_dir, build_id, Failure(BUILDER_FAULT, error, evidence), 0.0, None
        ):
            name = f"{job.name}=={job.version} ({job.abi})"
            report.failed += 1
            report.failures.append((name, BUILDER_FAULT, error))
            report.builder_faults.append((name, error))
            self.progress.finished(job, False, report)
        else:
            report.lost += 1
            self.progress.abandoned(job)
        log.warning(
            "%s %s (%s): recorded as %s after %d hand-backs (fix the builders, then "
            "'piwheels-ctl rebuild --failed-with %s'): %s",
            job.name, job.version, job.abi, BUILDER_FAULT, count, BUILDER_FAULT, error,
        )  # fmt: skip

    def _hand_back(self, build_ids: list[int]) -> None:
        """Return jobs to the queue: their builds never happened."""
        if build_ids:
            with self.db.session() as session:
                building = (Build.id.in_(build_ids), Build.status == BuildStatus.BUILDING)
                upkeep.touch(session, versions=session.scalars(select(Build.version_id).where(*building)))
                session.execute(delete(Build).where(*building))
