"""Check jobs on the runner's side: claim a check for a builder, run it in a build slot, and
record what its load check found (``queue.checks``)."""

from __future__ import annotations

import logging
from concurrent.futures import Future
from datetime import timedelta
from pathlib import Path
from typing import Any

from ..db.engine import Database
from ..farm.agentcall import BuilderError
from ..farm.executors import Executor, mark_failed
from ..queue.checks import CheckJob, claim_check, hand_back_check, record_check
from ..queue.releases import REFUSED
from .cross import drop_refused

log = logging.getLogger(__name__)


def next_check(db: Database, executor: Executor, lease: timedelta) -> CheckJob | None:
    """Claim the next check job of ``executor``'s release that one of its ABIs can load."""
    if executor.release is None:
        return None
    with db.session() as session:
        # Not with the ABIs it cross-builds: it cannot load their code.
        loads = [abi for abi in executor.pythons if abi not in executor.cross]
        return claim_check(session, executor.release, loads, executor.builder_id, lease)


def wheel_of(www_dir: Path, job: CheckJob) -> Path:
    """The index's copy of the file to check (its name is the index's own, checked when recorded)."""
    from .record import wheel_dir  # here: a run with nothing to check never imports the recorder

    return wheel_dir(www_dir, job.project) / job.filename


def finish_check(
    db: Database, www_dir: Path, future: Future[dict[str, Any]], executor: Executor, job: CheckJob
) -> str:
    """Record a check job's outcome: "passed", "refused", or "handed back" (the builder's fault:
    the check is pending again and the builder rests)."""
    try:
        load_check = future.result()
    except (BuilderError, OSError) as exc:  # the builder's fault, or this machine's: not the file's
        mark_failed(executor)
        log.warning("%s; the check of %s in %s goes back to the queue", exc, job.filename, job.release)
        with db.session() as session:
            hand_back_check(session, job, executor.builder_id)
        return "handed back"
    with db.session() as session:
        status = record_check(session, job, executor.builder_id, load_check)
    if status == REFUSED:  # a cross-built file is dropped, its project native only
        failures = [str(m) for m in load_check.get("failures") or ()]
        drop_refused(db, www_dir, job.file_id, job.release, failures)
    log.info("%s in %s: %s by %s", job.filename, job.release, status or "lost", executor.name)
    return status or "lost"
