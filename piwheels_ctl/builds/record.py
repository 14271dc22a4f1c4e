"""One transaction per build outcome: the build row, its files and the wheels on disk, together."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ..db.engine import Database
from ..db.models import Abi, Build, BuildStatus, File, Handback, Project, ServedFile, Version, utcnow
from ..errors import VerifyError
from ..failures.classify import Failure
from ..files import sha256_of
from ..publish.publisher import write_project_pages
from ..queue import releases
from ..queue.coverage import add_coverage
from .buildlog import store_log
from .verify import Wheel, check_arrival, with_build_tag


def wheel_dir(www_dir: Path, project: str) -> Path:
    """Where the wheels of ``project`` (canonical name) live: beside its index page."""
    return www_dir / "simple" / project


def _place(src: Path, dest: Path) -> Callable[[], None]:
    """Move ``src`` to ``dest`` atomically; return a function that puts everything back."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    backup = dest.with_name(f".{dest.name}.old")
    had_old = dest.exists()
    if had_old:
        os.replace(dest, backup)
    os.replace(src, dest)

    def undo() -> None:
        os.replace(dest, src)
        if had_old:
            os.replace(backup, dest)

    return undo


def _same_bytes(path: Path, sha256: str) -> bool:
    return sha256_of(path)[1] == sha256


def _name_taken(session: Session, target: Path, sha256: str) -> bool:
    """True when ``target``'s name is or was served, or lies on disk, with bytes other than ``sha256``."""
    served = session.get(ServedFile, target.name)
    if served is not None and served.sha256 != sha256:
        return True
    file = session.scalar(select(File).where(File.filename == target.name))
    if file is not None and file.sha256 != sha256:
        return True
    return target.exists() and not _same_bytes(target, sha256)


def _build_numbers(session: Session, folder: Path, wheel: Wheel) -> set[int]:
    """The build numbers (0: none) of every name this wheel's project, version and tags ever had,
    in the database, in the served history or on disk."""
    name, version, _build, tags = parse_wheel_filename(wheel.filename)
    prefix = "-".join(wheel.filename.split("-")[:2]) + "-"
    candidates: set[str] = set()
    for column in (File.filename, ServedFile.filename):
        candidates.update(session.scalars(select(column).where(column.startswith(prefix, autoescape=True))))
    if folder.is_dir():
        candidates.update(p.name for p in folder.iterdir() if p.name.startswith(prefix))
    numbers = set()
    for candidate in candidates:
        try:
            other_name, other_version, build, other_tags = parse_wheel_filename(candidate)
        except InvalidWheelFilename:
            continue
        if (other_name, other_version, other_tags) == (name, version, tags):
            numbers.add(build[0] if build else 0)
    return numbers


def _fresh_name(session: Session, folder: Path, wheel: Wheel) -> Wheel:
    """``wheel`` under a name never served with other bytes (URLs are immutable), and that pip
    prefers to every earlier build of it: a build tag above any this wheel's name had before."""
    numbers = _build_numbers(session, folder, wheel)
    build = parse_wheel_filename(wheel.filename)[2]
    own = build[0] if build else 0
    if not numbers or (
        own >= max(numbers) and not _name_taken(session, folder / wheel.filename, wheel.sha256)
    ):
        return wheel
    tagged = with_build_tag(wheel, max(numbers) + 1)
    if _name_taken(session, folder / tagged.filename, tagged.sha256):
        raise VerifyError(f"{wheel.filename}: {tagged.filename} is taken as well")
    return tagged


def _commit_files(
    session: Session,
    version: Version,
    build: Build | None,
    wheels: list[Wheel],
    folder: Path,
    mirrored: bool = False,
) -> list[Wheel]:
    """Record ``wheels`` (renamed with a build tag where needed); the wheels as they will be placed."""
    abis = list(session.scalars(select(Abi)))
    placed = []
    for wheel in wheels:
        wheel = _fresh_name(session, folder, wheel)
        placed.append(wheel)
        file = session.scalar(select(File).where(File.filename == wheel.filename))
        if file is not None and file.version_id != version.id:
            raise VerifyError(f"{wheel.filename}: already in the index for another version")
        if session.get(ServedFile, wheel.filename) is None:
            session.add(ServedFile(filename=wheel.filename, sha256=wheel.sha256, size=wheel.size))
        if file is None:
            file = File(filename=wheel.filename, version_id=version.id)
            session.add(file)
        file.build_id = build.id if build is not None else None
        file.size = wheel.size
        file.sha256 = wheel.sha256
        file.python_tag = wheel.python_tag
        file.abi_tag = wheel.abi_tag
        file.platform_tag = wheel.platform_tag
        file.requires_python = wheel.requires_python
        file.core_metadata = wheel.metadata
        file.metadata_sha256 = wheel.metadata_sha256
        file.deps = wheel.deps
        # The release it was built on, as its builder says now: kept, whatever the builder becomes.
        # A cross-built file's says so: no index lists it before the target loaded it.
        file.release = releases.built_on(build.builder.info, build.cross) if build and build.builder else None
        file.uploaded_at = utcnow()
        file.mirrored = mirrored
        session.flush()
        add_coverage(session, file, abis)
    version.project.dirty = True
    return placed


def install_files(
    db: Database,
    www_dir: Path,
    wheels: list[Wheel],
    work: Callable[[Session], tuple[Version, Build | None]],
    *,
    mirrored: bool = False,
) -> list[Wheel]:
    """Run ``work`` and record ``wheels`` in one transaction, moving them into the repository and
    rewriting the project's index pages; the wheels as placed (some may have got a build tag).
    ``mirrored``: the wheels are the upstream's own, fetched as published there.

    The rows, the files on disk and the pages appear together: if the commit fails, the wheels
    go back where they came from and the previous pages are restored. A wheel whose name is or
    was served with other bytes is placed under a new build tag, never over the old file.
    """
    undo: list[Callable[[], None]] = []
    try:
        with db.session() as session:
            version, build = work(session)
            target = wheel_dir(www_dir, version.project.name)
            placed = _commit_files(session, version, build, wheels, target, mirrored)
            for wheel in placed:
                undo.append(_place(wheel.path, target / wheel.filename))
            session.flush()
            undo.append(write_project_pages(session, www_dir, version.project_id))
    except BaseException:
        for step in reversed(undo):
            step()
        raise
    for wheel in placed:
        (wheel_dir(www_dir, wheel.name) / f".{wheel.filename}.old").unlink(missing_ok=True)
    return placed


def record_success(
    db: Database,
    www_dir: Path,
    logs_dir: Path,
    build_id: int,
    wheels: list[Wheel],
    duration: float,
    log: Path | None,
    ccache: tuple[int, int] | None = None,
    notes: list[str] | None = None,
    retried: str | None = None,
) -> bool:
    """Record a successful build (``ccache``: its compiler cache's hits and misses; ``notes``: what
    its load check noted; ``retried``: the note of its retry after a time-out); False if the
    build was handed back meanwhile (lease lost)."""

    def work(session: Session) -> tuple[Version, Build | None]:
        build = _finish(session, build_id, BuildStatus.SUCCESS, duration, logs_dir, log, ccache)
        if build is None:
            raise _LeaseLost
        build.notes = notes or None
        build.retried = retried
        return build.version, build

    try:
        install_files(db, www_dir, wheels, work)
    except _LeaseLost:
        return False
    return True


def record_failure(
    db: Database,
    logs_dir: Path,
    build_id: int,
    failure: Failure,
    duration: float,
    log: Path | None,
    packages: list[dict[str, str]] | None = None,
    ccache: tuple[int, int] | None = None,
    retried: str | None = None,
) -> bool:
    """Record a failed build with its reason, evidence and the packages that would fix it (None:
    not looked up), and the note of its retry after a time-out; False if the build was handed
    back meanwhile."""
    with db.session() as session:
        build = _finish(session, build_id, BuildStatus.FAILED, duration, logs_dir, log, ccache, failure)
        if build is None:
            return False
        build.version.project.dirty = True  # its page shows the failure
        build.failure_packages = packages
        build.retried = retried
    return True


def note_handback(db: Database, version_id: int, abi_id: int, error: str) -> int:
    """Count one more hand-back of (version, ABI) by a builder at fault; the count so far in a row."""
    with db.session() as session:
        row = session.get(Handback, (version_id, abi_id), with_for_update=True)
        if row is None:
            row = Handback(version_id=version_id, abi_id=abi_id, count=0)
            session.add(row)
        row.count += 1
        row.last_error = error
        row.updated_at = utcnow()
        return row.count


def _finish(
    session: Session,
    build_id: int,
    status: BuildStatus,
    duration: float,
    logs_dir: Path,
    log: Path | None,
    ccache: tuple[int, int] | None = None,
    failure: Failure | None = None,
) -> Build | None:
    """End a build still ours (None if it was handed back meanwhile), storing its log."""
    build = session.get(Build, build_id)
    if build is None or build.status is not BuildStatus.BUILDING:
        return None
    # The pair came to an end: the builders' earlier hand-backs of it no longer count.
    session.execute(
        delete(Handback).where(Handback.version_id == build.version_id, Handback.abi_id == build.abi_id)
    )
    build.status = status
    build.duration = duration
    build.ccache_hits, build.ccache_misses = ccache or (None, None)
    build.lease_expires = None
    if failure is not None:  # before the log's header, which says it
        build.failure_reason, build.failure_detail = failure.reason, failure.detail
        build.failure_evidence = failure.evidence
    build.log_path = store_log(logs_dir, build, log)
    return build


class _LeaseLost(Exception):
    """The build row is no longer ours to complete."""


def import_wheel(db: Database, www_dir: Path, wheel: Wheel) -> Wheel:
    """Add a verified wheel built elsewhere to the repository (the file is copied, not moved);
    the wheel as placed, with a build tag if its name was served with other bytes."""
    target_dir = wheel_dir(www_dir, wheel.name)
    target_dir.mkdir(parents=True, exist_ok=True)
    # Staged beside its target (the same file system, for the atomic rename) under its own name,
    # which ``wheel tags`` needs should it get a build tag.
    staging = Path(tempfile.mkdtemp(dir=target_dir, prefix=".import-", suffix=".tmp"))
    staged = staging / wheel.filename
    shutil.copyfile(wheel.path, staged)
    check_arrival(staged, wheel.size, wheel.sha256)  # the copy is the file that was verified
    copy = dataclasses.replace(wheel, path=staged)

    def work(session: Session) -> tuple[Version, Build | None]:
        project = session.scalar(select(Project).where(Project.name == wheel.name))
        if project is None:
            project = Project(name=wheel.name, display_name=wheel.name, watched=False, dirty=True)
            session.add(project)
            session.flush()
        version = session.scalar(
            select(Version).where(Version.project_id == project.id, Version.version == wheel.version)
        )
        if version is None:
            version = Version(project_id=project.id, version=wheel.version, priority=0)
            session.add(version)
            session.flush()
        session.refresh(version)
        return version, None

    try:
        (placed,) = install_files(db, www_dir, [copy], work)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return placed
