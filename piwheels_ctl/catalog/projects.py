"""The projects and versions we track: add, remove, sync from the upstream, skip and rebuild."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion
from packaging.version import parse as parse_version
from sqlalchemy import ColumnElement, delete, insert, or_, select, true, update
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from ..db.models import Abi, Build, BuildStatus, Coverage, Project, Version, utcnow
from ..errors import InputError, PiwheelsError, ProjectGone
from ..queue import upkeep, upstream_coverage

if TYPE_CHECKING:
    from ..upstream.index import ProjectPage, Release, Upstream, WheelLink

# A release with wheels and no sdist (yet): it waits, and is queued when an sdist appears.
NO_SDIST = "no-sdist"

# Projects recorded in one transaction by ``sync``.
SYNC_BATCH = 200

T = TypeVar("T")

# A transaction of its own each time it is entered: ``Database.session``.
Sessions = Callable[[], AbstractContextManager[Session]]

logger = logging.getLogger(__name__)


def _length(column: Any) -> int:
    """The length of a String column: what the database (PostgreSQL strictly) will store."""
    return int(column.type.length)


# The upstream's values are checked against these before they reach the database.
NAME_MAX = _length(Project.name)
DISPLAY_NAME_MAX = _length(Project.display_name)
VERSION_MAX = _length(Version.version)
FILENAME_MAX = _length(Version.sdist_filename)
SHA256_MAX = _length(Version.sdist_sha256)
REQUIRES_PYTHON_MAX = _length(Version.requires_python)


@dataclass
class SyncReport:
    """What a sync did, and what it skipped: (project, why) for each project or item left out."""

    synced: int = 0  # projects the upstream answered for, changed or not
    changed: int = 0
    new: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)
    fetched: int = 0  # pages asked for
    unchanged: int = 0  # projects whose serial said they had not changed: not asked for
    deleted: list[str] = field(default_factory=list)  # projects newly marked deleted upstream
    serials: bool = False  # whether the upstream's listing gave serials

    def problem(self, name: str, message: str) -> None:
        self.problems.append((name, message))


@dataclass(frozen=True)
class Wanted:
    """A project asked for by the user, with the versions wanted (None: every version)."""

    name: str  # as given
    specifier: SpecifierSet | None
    source: str  # where it came from, for error messages

    @property
    def canonical(self) -> str:
        return canonicalize_name(self.name)


def parse_wanted(text: str, source: str) -> Wanted:
    """Parse ``NAME`` or ``NAME==VERSION`` (any PEP 508 specifier) into a Wanted."""
    try:
        req = Requirement(text.strip())
    except InvalidRequirement as exc:
        reason = str(exc).splitlines()[0]  # packaging adds the text and a caret below
        raise InputError(f"{source}: {text.strip()!r} is not a valid requirement: {reason}") from None
    if req.url:
        raise InputError(f"{source}: {text.strip()!r}: URL requirements cannot be built from the upstream")
    if len(req.name) > NAME_MAX:
        raise InputError(f"{source}: {req.name[:40]}...: a project name is at most {NAME_MAX} characters")
    return Wanted(req.name, req.specifier if str(req.specifier) else None, source)


def read_requirements(path: Path) -> list[Wanted]:
    """The requirements of a pip requirements file; options and nested files are refused by name."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read requirements: {exc}") from None
    wanted = []
    for number, line in enumerate(lines, 1):
        text = line.split(" #", 1)[0].strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith("-"):
            raise InputError(f"{path}:{number}: pip option {text.split()[0]!r} is not supported")
        found = parse_wanted(text, f"{path}:{number}")
        # A pinned file means "what pip would install": the newest version that matches.
        wanted.append(found if found.specifier else Wanted(found.name, SpecifierSet(), found.source))
    return wanted


def _choose(page: ProjectPage, wanted: Wanted) -> list[str]:
    """The versions of ``page`` that ``wanted`` asks to build (empty list: watch them all)."""
    if wanted.specifier is None:
        return []
    # A release counts with an sdist to build, or a wheel of the upstream's that may cover us.
    versions = [r.version for r in page.releases if r.sdist_url or r.wheels]
    pinned = [s for s in wanted.specifier if s.operator in ("==", "===") and "*" not in s.version]
    matching = list(wanted.specifier.filter(versions))
    if pinned:
        if not matching:
            raise InputError(
                f"{wanted.source}: {wanted.name} has no sdist or wheel of version {wanted.specifier}"
            )
        return matching
    if not matching:
        raise InputError(f"{wanted.source}: no sdist or wheel of {wanted.name} matches {wanted.specifier!s}")
    return [max(matching, key=parse_version)]


def _too_long(release: Release) -> str | None:
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
    page: ProjectPage,
    problems: list[str] | None = None,
    glibc: tuple[int, int] | None = None,
) -> int:
    """Bring the versions of ``project`` up to ``page``; the number of new versions.

    A release with a value too long for the database is left out, said in ``problems``. The
    wheels the upstream publishes cover the ABIs they install on (``glibc``: the builders'
    oldest, for manylinux wheels; None: not known, they cover nothing).
    """
    problems = [] if problems is None else problems
    existing = {v.version: v for v in project.versions}
    added = 0
    wheels: dict[str, Sequence[WheelLink]] = {}
    for release in page.releases:
        wrong = _too_long(release)
        if wrong is not None:
            problems.append(f"{page.name}: a release skipped: {wrong}")
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
        problems.append(f"{page.name}: display name kept: the new one is longer than {DISPLAY_NAME_MAX}")
    project.etag = page.etag
    project.last_modified = page.last_modified
    project.synced_at = utcnow()
    return added


def _project(session: Session, name: str, display: str) -> Project:
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        shown = display if len(display) <= DISPLAY_NAME_MAX else name
        project = Project(name=name, display_name=shown, watched=False, dirty=True)
        session.add(project)
    return project


def _skipped_version(project: Project, version: str) -> bool:
    return any(v.version == version and v.skip_reason for v in project.versions)


def add(
    session: Session,
    upstream: Upstream,
    wanted: Iterable[Wanted],
    problems: list[str] | None = None,
    glibc: tuple[int, int] | None = None,
) -> list[tuple[str, list[str], bool]]:
    """Track the wanted projects: fetch each page first, so a bad name or page changes nothing.

    The session is first used once every page is in: no transaction is held over the network.
    Releases left out (values too long for the database), and skipped ones, are said in
    ``problems``; each project comes back with its versions to build (empty: all of them) and
    whether the request is skipped as a whole.
    """
    pages = [(w, upstream.project(w.canonical)) for w in wanted]
    added = []
    for want, page in pages:
        assert page is not None  # no etag was sent, so the page came back
        versions = _choose(page, want)
        project = _project(session, page.name, page.display_name)
        apply_page(session, project, page, problems, glibc)
        if not versions:
            project.watched = True
        said: list[str] = []
        for row in project.versions:
            if row.version in versions:
                row.priority = max(row.priority, 1)
                if row.skip_reason and not project.skip_reason:
                    said.append(f"{page.name}=={row.version} is skipped ({row.skip_reason}): "
                                f"'piwheels-ctl unskip {page.name}=={row.version}' to build it")  # fmt: skip
        if project.skip_reason:
            said.append(f"{page.name} is skipped ({project.skip_reason}): "
                        f"'piwheels-ctl unskip {page.name}' to build it")  # fmt: skip
        if problems is not None:
            problems.extend(said)
        skipped_all = bool(project.skip_reason) or (bool(versions) and len(said) == len(versions))
        added.append((page.name, [v for v in versions if not _skipped_version(project, v)], skipped_all))
    return added


def _tracked() -> ColumnElement[bool]:
    requested = select(Version.project_id).where(Version.priority > 0)
    return or_(Project.watched, Project.id.in_(requested))


def tracked(session: Session) -> list[Project]:
    """Projects whose versions ``sync`` refreshes: watched, or with a requested version."""
    return list(session.scalars(select(Project).where(_tracked()).order_by(Project.name)))


def sync(
    sessions: Sessions,
    upstream: Upstream,
    progress: Callable[[str], None] = lambda _name: None,
    glibc: tuple[int, int] | None = None,
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
            .where(_tracked())
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
        for names in _batched(gone, batch):
            with sessions() as session:
                _mark_deleted(session, names)
        report.deleted.extend(gone)
        for name in gone:
            report.problem(name, f"{name}: no longer listed by the upstream {upstream.location}")

    def fetch(item: _Todo) -> ProjectPage | PiwheelsError | None:
        progress(item.name)
        try:
            return upstream.project(item.name, item.etag, item.last_modified)
        except PiwheelsError as exc:  # gone, or a bad page: this project alone
            return exc

    with ThreadPoolExecutor(max_workers=max(1, upstream.workers)) as pool:
        for chunk in _batched(todo, batch):
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
    results: list[tuple[_Todo, ProjectPage | PiwheelsError | None]],
    report: SyncReport,
    glibc: tuple[int, int] | None,
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
            problems: list[str] = []
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
                            added = apply_page(session, project, result, problems, glibc)
                        session.flush()  # what the database refuses is refused here, in the savepoint
            except (DataError, IntegrityError) as exc:  # what the checks before missed
                report.problem(item.name, f"{item.name}: not recorded: {str(exc.orig).splitlines()[0]}")
                continue
            if added is None:
                continue
            report.changed += 1
            report.new += added
            for problem in problems:
                report.problem(item.name, problem)


def _mark_deleted(session: Session, names: Sequence[str]) -> list[str]:
    """Mark the projects deleted upstream (those not marked yet); the names newly marked.

    Their rows, versions and wheels stay: the ``upstream_deleted`` setting tells the publisher
    whether their wheels stay listed.
    """
    if not names:
        return []
    projects = session.scalars(
        select(Project).where(Project.name.in_(names), Project.deleted_at.is_(None))
    ).all()
    for project in projects:
        project.deleted_at = utcnow()
        project.dirty = True
    return [p.name for p in projects]


def sync_all(sessions: Sessions, upstream: Upstream, chunk: int = 10_000) -> tuple[int, list[str]]:
    """Record every project name of the upstream without fetching each one: (names added, problems).

    Each batch of names is a transaction of its own, so a failure late in the listing keeps
    what came before. Names too long for the database are skipped, said in the problems.
    """
    with sessions() as session:
        known = set(session.scalars(select(Project.name)))
    added = 0
    problems: list[str] = []

    def wanted() -> Iterator[tuple[str, str]]:
        for name, display in upstream.project_names():
            if name in known:
                continue
            if len(name) > NAME_MAX or len(display) > DISPLAY_NAME_MAX:
                problems.append(f"{upstream.location}: name {name[:40]!r}... skipped: longer than {NAME_MAX}")
                continue
            yield name, display

    for batch in _batched(wanted(), chunk):
        rows = {name: display for name, display in batch}
        with sessions() as session:
            session.execute(
                insert(Project),
                [{"name": n, "display_name": d, "watched": False, "dirty": False} for n, d in rows.items()],
            )
        known.update(rows)
        added += len(rows)
    return added, problems


def _batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def find(session: Session, name: str, version: str | None = None) -> tuple[Project, list[Version]]:
    """A tracked project and its versions (or the one ``version``); InputError names what is missing."""
    canonical = canonicalize_name(name)
    project = session.scalar(select(Project).where(Project.name == canonical))
    if project is None:
        raise InputError(f"{name}: not a known project (add it first)")
    if version is None:
        return project, list(project.versions)
    try:
        normal = str(parse_version(version))
    except InvalidVersion:
        raise InputError(f"{name}: {version!r} is not a valid version") from None
    rows = [v for v in project.versions if v.version == normal]
    if not rows:
        raise InputError(f"{name}: no version {version} is known (run sync?)")
    return project, rows


def remove(session: Session, name: str) -> None:
    """Stop building ``name``; its published wheels stay."""
    project, versions = find(session, name)
    project.watched = False
    for row in versions:
        row.priority = 0


def skip(session: Session, name: str, version: str | None, reason: str) -> int:
    """Never build ``name`` (or one version of it) again, for ``reason``; versions affected."""
    project, versions = find(session, name, version)
    if version is None:
        project.skip_reason = reason
    else:
        for row in versions:
            row.skip_reason = reason
    project.dirty = True  # its page shows why
    return len(versions)


def unskip(session: Session, name: str, version: str | None) -> int:
    """Build ``name`` (or one version of it) again after ``skip``; the number of skips lifted.

    A version without an sdist stays skipped: there is nothing to build.
    """
    project, versions = find(session, name, version)
    lifted = 0
    if version is None and project.skip_reason is not None:
        project.skip_reason = None
        lifted += 1
    for row in versions:
        if row.skip_reason is not None:
            row.skip_reason = None
            lifted += 1
    if not lifted:
        raise InputError(f"{name}{'==' + version if version else ''}: not skipped")
    project.dirty = True
    return lifted


def skip_reason(project: Project, row: Version | None = None) -> str | None:
    """Why ``project`` (or its version ``row``) is not built, if it is skipped."""
    return project.skip_reason or (row.skip_reason if row is not None else None)


def skipped(session: Session) -> list[tuple[str, str | None, str]]:
    """Every skip the user made: (project, version or None for all, reason); sdist-less versions
    are left out (nothing to build)."""
    projects = session.execute(
        select(Project.name, Project.skip_reason).where(Project.skip_reason.is_not(None))
    ).tuples()
    result: list[tuple[str, str | None, str]] = [(n, None, str(r)) for n, r in projects]
    # The skipped versions first (a partial index holds them), then their projects' names: as
    # one join, SQLite's planner would rather walk every project.
    versions = session.execute(
        select(Version.project_id, Version.version, Version.skip_reason).where(
            Version.skip_reason.is_not(None)
        )
    ).all()
    names: dict[int, str] = {}
    ids = sorted({project_id for project_id, _v, _r in versions})
    for start in range(0, len(ids), 500):  # bounded IN lists
        chunk = ids[start : start + 500]
        names.update(
            session.execute(select(Project.id, Project.name).where(Project.id.in_(chunk))).tuples().all()
        )
    result += [(names[p], v, str(r)) for p, v, r in versions]
    return sorted(result, key=lambda item: (item[0], item[1] or ""))


@dataclass
class Rebuilt:
    """What ``rebuild`` queued, and the versions it left alone because they are skipped."""

    queued: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (version, reason)


def rebuild(
    session: Session,
    name: str,
    version: str | None,
    *,
    all_versions: bool = False,
    abi: str | None = None,
) -> Rebuilt:
    """Put versions back in the queue, first; their finished builds stay as history, their wheels
    served. Without ``version``: the versions built or failed before (``all_versions``: every one).
    With ``abi``: only for that ABI tag."""
    project, versions = find(session, name, version)
    abi_ids: list[int] | None = None
    if abi is not None:
        abi_ids = list(session.scalars(select(Abi.id).where(Abi.tag == abi)))
        if not abi_ids:
            raise InputError(f"--abi {abi}: not an ABI of this farm (see 'piwheels-ctl status')")
    finished = Build.status != BuildStatus.BUILDING
    for_abi = Build.abi_id.in_(abi_ids) if abi_ids is not None else true()
    if version is None and not all_versions:
        tried = set(
            session.scalars(
                select(Build.version_id).where(
                    Build.version_id.in_([v.id for v in versions]), finished, for_abi,
                    Build.superseded.is_(False),
                )
            )
        )  # fmt: skip
        versions = [v for v in versions if v.id in tried]
    result = Rebuilt()
    ids = []
    for row in versions:
        reason = skip_reason(project, row)
        if row.sdist_url is None:
            continue
        if reason:
            result.skipped.append((row.version, reason))
            continue
        ids.append(row.id)
        result.queued.append(row.version)
        row.priority = max(row.priority, 1)
    cov_abi = Coverage.abi_id.in_(abi_ids) if abi_ids is not None else true()
    upkeep.touch(session, versions=ids)
    session.execute(delete(Coverage).where(Coverage.version_id.in_(ids), cov_abi))
    session.execute(update(Build).where(Build.version_id.in_(ids), finished, for_abi).values(superseded=True))
    project.dirty = True
    return result
