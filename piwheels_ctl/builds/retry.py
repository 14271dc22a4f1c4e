"""Second chances: a build that timed out is built once more with a longer limit, and a builder
too loaded to build is left be for a while, before either becomes anyone's fault."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from ..config import Settings
from ..db.engine import Database
from ..db.models import Build, Builder, BuildStatus, utcnow
from ..farm.executors import Executor, Outcome

log = logging.getLogger(__name__)

# How long a builder that refused a build for its load is left be before it is asked again.
LOAD_REST = timedelta(minutes=2)


def retry_limit(settings: Settings, outcome: Outcome, retried: bool) -> float | None:
    """The longer limit ``outcome``'s build is tried again with: its first attempt timed out
    and it was not retried yet (None: its outcome is final)."""
    result = outcome.result
    if retried or not settings.timeout_retry_factor or result.get("status") != "failed":
        return None
    if not result.get("timed_out"):
        return None
    return settings.build_timeout * settings.timeout_retry_factor


def plan(
    db: Database,
    settings: Settings,
    first: Executor,
    free: Sequence[Executor],
    outcome: Outcome,
    margin: timedelta,
) -> tuple[Executor, str]:
    """Where a timed-out build runs again and what it says of itself (in its record, its log,
    its page and ``failures``): on another builder of its ABI with a free slot (a time-out under
    load is often the builder's load), else where it timed out; its row follows it there with a
    lease that outlives the longer limit."""
    abi_id, longer = outcome.job.abi_id, settings.build_timeout * settings.timeout_retry_factor
    target = next((e for e in free if e is not first and abi_id in e.pythons), first)
    note = (
        f"retried: the first attempt stopped at its limit of {settings.build_timeout:g} s on "
        f"{first.name}; built again with a limit of {longer:g} s on {target.name}"
    )
    log.info("%s %s (%s): %s", outcome.job.name, outcome.job.version, outcome.job.abi, note)
    with db.session() as session:
        session.execute(
            update(Build)
            .where(Build.id == outcome.build_id, Build.status == BuildStatus.BUILDING)
            .values(builder_id=target.builder_id, lease_expires=utcnow() + timedelta(seconds=longer) + margin)
        )
    return target, note


def note_in_log(log: Path, note: str) -> None:
    """Put the retry's note at the head of the build's log (before it is stored)."""
    try:
        text = log.read_bytes()
    except OSError:
        text = b""
    log.write_bytes(f"piwheels-ctl: {note}\n\n".encode() + text)


def rest_loaded(db: Database, executor: Executor, outcome: Outcome) -> str:
    """Leave a builder that refused a build for its load be for ``LOAD_REST``: it stays healthy
    (its load is no fault) and its row says why it builds nothing. What it said, for the report."""
    said = f"{executor.name}: {outcome.result.get('error') or 'busy'}"
    executor.retry_at = utcnow() + LOAD_REST
    with db.session() as session:
        builder = session.get(Builder, executor.builder_id)
        if builder is not None:
            builder.info = {**builder.info, "busy": f"{utcnow().isoformat(timespec='seconds')}: {said}"}
    return said
