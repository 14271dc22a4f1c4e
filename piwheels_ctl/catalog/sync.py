"""Keep the tracked projects in step with the upstream: fetch their pages, record what changed."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, insert, or_, select
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from ..abi import Glibc
from ..db.batches import in_batches
from ..db.models import Project, Version, utcnow
from ..errors import PiwheelsError, ProjectGone
from ..queue import upstream_coverage
from .columns import DISPLAY_NAME_MAX, FILENAME_MAX, NAME_MAX, REQUIRES_PYTHON_MAX, SHA256_MAX, VERSION_MAX
from .report import Report

if TYPE_CHECKING:
    from ..upstream.page import IndexPage, IndexRelease, WheelLink
    from ..upstream.source import Upstream

# Projects recorded in one transaction by ``sync``.
SYNC_BATCH = 200

# A transaction of its own each time it is entered: ``Database.session``.
Sessions = Callable[[], AbstractContextManager[Session]]


@dataclass
class SyncReport(Report):
    """What a sync did, and what it skipped: a problem for each project or item left out."""

    synced: int = 0  # projects the upstream answered for, changed or not
    changed: int = 0
    new: int = 0
    fetched: int = 0  # pages asked for
    unchanged: int = 0  # projects whose serial said they had not changed: not asked for
    deleted: list[str] = field(default_factory=list)  # projects newly marked deleted upstream
    serials: bool = False  # whether the upstream's listing gave serials


@dataclass
class ListReport(Report):
    """What ``sync_all`` recorded: the number of new project names; a problem for each left out."""

    added: int = 0


def tracked_clause() -> ColumnElement[bool]:
    """Which projects ``sync`` refreshes: watched, or with a requested version."""
    requested = select(Version.project_id).where(Version.priority > 0)
    return or_(Project.watched, Project.id.in_(requested))


def _too_long(release: IndexRelease) -> str | None:
    """What in ``release`` is longer than its column, or None when all fits."""
    for what, value, limit in (
        ("version", release.version, VERSION_MAX),
        ("sdist filename", release.sdist_filename, FILENAME_MAX),
        ("sdist sha256", release.sdist_sha256, SHA256_MAX),
        ("requires-python", release.requires_python, REQUIRES_PYTHON_MAX),
    ):
        if value is not None and len(value) > limit:
            return f"{what} {value[:40]!r}... is longer than {limit} characters"
    return None


def _wheel_fits(wheel: WheelLink) -> bool:
    """Whether the upstream wheel's values fit the database (a longer one is never ours to mirror)."""
    return len(wheel.filename) <= FILENAME_MAX and len(wheel.requires_python or "") <= REQUIRES_PYTHON_MAX


def apply_page(
    session: Session,
    project: Project,
    page: IndexPage,
    report: Report,
    glibc: Glibc = None,
) -> int:
    """Bring the versions of ``project`` up to ``page``; the number of new versions.

    A release with a value too long for the database is left out, said in ``report``. The
    wheels the upstream publishes cover the ABIs they install on (``glibc``: the builders'
    oldest, for manylinux wheels; None: not known, they cover nothing).
    """
    existing = {v.version: v for v in project.versions}
    added = 0
    wheels: dict[str, Sequence[WheelLink]] = {}
    for release in page.releases:
        wrong = _too_long(release)
        if wrong is not None:
            report.problem(page.name, f"{page.name}: a release skipped: {wrong}")
            continue
        row = existing.get(release.version)
        if row is None:
            row = Version(version=release.version, priority=0)
            project.versions.append(row)
            added += 1
        if row.yanked != release.yanked or row.id is None:  # its page shows every release
            project.dirty = True
        row.release_time = release.release_time
        row.yanked = release.yanked
        row.yanked_reason = release.yanked_reason
        row.sdist_filename = release.sdist_filename
        row.sdist_url = release.sdist_url
        row.sdist_sha256 = release.sdist_sha256
        row.requires_python = release.requires_python
        wheels[release.version] = [w for w in release.wheels if _wheel_fits(w)]
    upstream_coverage.record_wheels(session, project, wheels, glibc)
    if len(page.display_name) <= DISPLAY_NAME_MAX:
        project.display_name = page.display_name
    else:
        report.problem(
            page.name, f"{page.name}: display name kept: the new one is longer than {DISPLAY_NAME_MAX}"
        )
    project.etag = page.etag
    project.last_modified = page.last_modified
    project.synced_at = utcnow()
    return added


def sync(
    sessions: Sessions,
    upstream: Upstream,
    progress: Callable[[str], None] = lambda _name: None,
    glibc: Glibc = None,
    *,
    batch: int = SYNC_BATCH,
) -> SyncReport:
    """Refresh the tracked projects that changed upstream, ``batch`` projects a transaction.

    When the upstream's root lists serials (PEP 691 JSON, ``_last-serial``), only the projects
    whose serial changed are fetched, and those it no longer lists are marked deleted; otherwise
    every page is asked for with a conditional request (its ETag or Last-Modified). Pages are
    fetched ``upstream.workers`` at a time. A project gone upstream (404) is marked deleted and
    reported; a bad page, or values the database refuses, are reported and that project alone
    is skipped. No transaction is open while a page is fetched.
    """
    report = SyncReport()
    serials: dict[str, int] | None = None
    try:
        serials = upstream.serials()
    except PiwheelsError as exc:  # the listing failed: every page is asked for instead
        report.problem(upstream.location, f"{exc} (every project's page is asked for instead)")
    report.serials = serials is not None
    with sessions() as session:
        rows = session.execute(
            select(Project.name, Project.etag, Project.last_modified, Project.serial, Project.deleted_at)
            .where(tracked_clause())
            .order_by(Project.name)
        ).all()
    todo: list[_Todo] = []
    gone: list[str] = []
    for row in rows:
        if serials is None:
            todo.append(_Todo(row.name, row.etag, row.last_modified, None))
        elif row.name not in serials:
            if row.deleted_at is None:
                gone.append(row.name)
        elif serials[row.name] != row.serial or row.deleted_at is not None:
            # No validators: the serial said it changed, so the whole page is wanted.
            todo.append(_Todo(row.name, None, None, serials[row.name]))
    report.unchanged = len(rows) - len(todo) - len(gone)
    report.synced = report.unchanged
    del rows, serials
    if gone:
        for names in in_batches(gone, batch):
            with sessions() as session:
                _mark_deleted(session, names)
        report.deleted.extend(gone)
        for name in gone:
            report.problem(name, f"{name}: no longer listed by the upstream {upstream.location}")

    def fetch(item: _Todo) -> IndexPage | PiwheelsError | None:
        progress(item.name)
        try:
            return upstream.project(item.name, item.etag, item.last_modified)
        except PiwheelsError as exc:  # gone, or a bad page: this project alone
            return exc

    with ThreadPoolExecutor(max_workers=max(1, upstream.workers)) as pool:
        for chunk in in_batches(todo, batch):
            # Fetched in full before the transaction opens: none is held over the network.
            results = list(pool.map(fetch, chunk))
            report.fetched += len(chunk)
            _record(sessions, list(zip(chunk, results, strict=True)), report, glibc)
    return report


@dataclass(frozen=True)
class _Todo:
    """A project to ask the upstream for, with what it said last time."""

    name: str
    etag: str | None
    last_modified: str | None
    serial: int | None  # the root listing's, recorded once the page is in


def _record(
    sessions: Sessions,
    results: list[tuple[_Todo, IndexPage | PiwheelsError | None]],
    report: SyncReport,
    glibc: Glibc,
) -> None:
    """Record a batch of fetched pages in one transaction, each project in a savepoint of its
    own: one the database refuses is rolled back alone and reported."""
    gone = [item.name for item, result in results if isinstance(result, ProjectGone)]
    with sessions() as session:
        report.deleted.extend(_mark_deleted(session, gone))
        for item, result in results:
            if isinstance(result, PiwheelsError):
                report.problem(item.name, str(result))
                continue
            report.synced += 1
            found = Report()  # said only once the project is recorded
            added: int | None = None  # None: unchanged, or forgotten since the list was read
            try:
                with session.begin_nested():
                    project = session.scalar(select(Project).where(Project.name == item.name))
                    if project is not None:
                        if project.deleted_at is not None:
                            project.deleted_at = None  # back upstream
                            project.dirty = True
                        if item.serial is not None:
                            project.serial = item.serial
                        if result is not None:
                            added = apply_page(session, project, result, found, glibc)
                        session.flush()  # what the database refuses is refused here, in the savepoint
            except (DataError, IntegrityError) as exc:  # what the checks before missed
                report.problem(item.name, f"{item.name}: not recorded: {str(exc.orig).splitlines()[0]}")
                continue
            if added is None:
                continue
            report.changed += 1
            report.new += added
            report.problems.extend(found.problems)


def _mark_deleted(session: Session, names: Sequence[str]) -> list[str]:
    """Mark the projects deleted upstream (those not marked yet); the names newly marked.

    Their rows, versions and wheels stay: the ``upstream_deleted`` setting tells the publisher
    whether their wheels stay listed.
    """
    marked = []
    for chunk in in_batches(names):
        projects = session.scalars(
            select(Project).where(Project.name.in_(chunk), Project.deleted_at.is_(None))
        ).all()
        for project in projects:
            project.deleted_at = utcnow()
            project.dirty = True
        marked += [p.name for p in projects]
    return marked


def sync_all(sessions: Sessions, upstream: Upstream, chunk: int = 10_000) -> ListReport:
    """Record every project name of the upstream without fetching each one.

    Each batch of names is a transaction of its own, so a failure late in the listing keeps
    what came before. Names too long for the database are skipped, said in the report.
    """
    with sessions() as session:
        known = set(session.scalars(select(Project.name)))
    report = ListReport()

    def wanted() -> Iterator[tuple[str, str]]:
        for name, display in upstream.project_names():
            if name in known:
                continue
            if len(name) > NAME_MAX or len(display) > DISPLAY_NAME_MAX:
                report.problem(
                    name, f"{upstream.location}: name {name[:40]!r}... skipped: longer than {NAME_MAX}"
                )
                continue
            yield name, display

    for batch in in_batches(wanted(), chunk):
        rows = {name: display for name, display in batch}
        with sessions() as session:
            session.execute(
                insert(Project),
                [{"name": n, "display_name": d, "watched": False, "dirty": False} for n, d in rows.items()],
            )
        known.update(rows)
        report.added += len(rows)
    return report
