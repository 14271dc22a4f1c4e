"""One transaction per build outcome: the build row, its files and the wheels on disk, together."""

from __future__ import annotations

import dataclasses
import gzip
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from .abi import AbiTags, wheel_covers
from .classifier import Failure
from .collector import Wheel
from .database import Database
from .errors import VerifyError
from .models import Abi, Build, BuildStatus, Coverage, File, Project, Version, utcnow


def wheel_dir(www_dir: Path, project: str) -> Path:
    """Where the wheels of ``project`` (canonical name) live: beside its index page."""
    return www_dir / "simple" / project


def store_log(logs_dir: Path, build: Build, log: Path | None) -> str | None:
    """Gzip a build's log into the log store; the path is relative to ``logs_dir``."""
    if log is None or not log.exists():
        return None
    relative = Path(build.version.project.name) / f"{build.id}.log.gz"
    target = logs_dir / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.tmp")
    with open(log, "rb") as src, gzip.open(temp, "wb", compresslevel=6) as dst:
        shutil.copyfileobj(src, dst)
    os.replace(temp, target)
    return str(relative)


def abi_tags(abi: Abi) -> AbiTags:
    return AbiTags(abi.python_tag, abi.abi_tag, abi.platform_tag)


def add_coverage(session: Session, file: File, abis: Iterable[Abi]) -> None:
    """Record every ABI the wheel ``file`` installs on, so the queue skips them."""
    for abi in abis:
        if wheel_covers(file.filename, abi_tags(abi)):
            session.merge(Coverage(version_id=file.version_id, abi_id=abi.id, file_id=file.id))


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


def _commit_files(session: Session, version: Version, build: Build | None, wheels: list[Wheel]) -> None:
    abis = list(session.scalars(select(Abi)))
    for wheel in wheels:
        file = session.scalar(select(File).where(File.filename == wheel.filename))
        if file is not None and file.version_id != version.id:
            raise VerifyError(f"{wheel.filename}: already in the index for another version")
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
        file.uploaded_at = utcnow()
        session.flush()
        add_coverage(session, file, abis)
    version.project.dirty = True


def install_files(
    db: Database,
    www_dir: Path,
    wheels: list[Wheel],
    work: Callable[[Session], tuple[Version, Build | None]],
) -> None:
    """Run ``work`` and record ``wheels`` in one transaction, moving them into the repository.

    The rows and the files on disk appear together: if the commit fails, the wheels go back
    where they came from and any wheel they replaced is restored.
    """
    undo: list[Callable[[], None]] = []
    try:
        with db.session() as session:
            version, build = work(session)
            _commit_files(session, version, build, wheels)
            target = wheel_dir(www_dir, version.project.name)
            for wheel in wheels:
                undo.append(_place(wheel.path, target / wheel.filename))
            session.flush()
    except BaseException:
        for step in reversed(undo):
            step()
        raise
    for wheel in wheels:
        (wheel_dir(www_dir, wheel.name) / f".{wheel.filename}.old").unlink(missing_ok=True)


def record_success(
    db: Database,
    www_dir: Path,
    logs_dir: Path,
    build_id: int,
    wheels: list[Wheel],
    duration: float,
    log: Path | None,
) -> bool:
    """Record a successful build; False if the build was handed back meanwhile (lease lost)."""

    def work(session: Session) -> tuple[Version, Build | None]:
        build = _finish(session, build_id, BuildStatus.SUCCESS, duration, logs_dir, log)
        if build is None:
            raise _LeaseLost
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
) -> bool:
    """Record a failed build with its reason; False if the build was handed back meanwhile."""
    with db.session() as session:
        build = _finish(session, build_id, BuildStatus.FAILED, duration, logs_dir, log)
        if build is None:
            return False
        build.failure_reason = failure.reason
        build.failure_detail = failure.detail
    return True


def _finish(
    session: Session, build_id: int, status: BuildStatus, duration: float, logs_dir: Path, log: Path | None
) -> Build | None:
    """End a build still ours (None if it was handed back meanwhile), storing its log."""
    build = session.get(Build, build_id)
    if build is None or build.status is not BuildStatus.BUILDING:
        return None
    build.status = status
    build.duration = duration
    build.lease_expires = None
    build.log_path = store_log(logs_dir, build, log)
    return build


class _LeaseLost(Exception):
    """The build row is no longer ours to complete."""


def import_wheel(db: Database, www_dir: Path, wheel: Wheel) -> None:
    """Add a verified wheel built elsewhere to the repository (the file is copied, not moved)."""
    target_dir = wheel_dir(www_dir, wheel.name)
    target_dir.mkdir(parents=True, exist_ok=True)
    staged = target_dir / f".{wheel.filename}.import"
    shutil.copyfile(wheel.path, staged)
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
        install_files(db, www_dir, [copy], work)
    finally:
        staged.unlink(missing_ok=True)
