"""The projects and versions we track: add, remove, sync from the upstream, skip and rebuild."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version
from sqlalchemy import delete, insert, or_, select, true, update
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from . import queue_upkeep, upstream_coverage
from .errors import InputError, PiwheelsError
from .models import Abi, Build, BuildStatus, Coverage, Project, utcnow
from .models import Version as VersionRow

if TYPE_CHECKING:
    from .upstream import ProjectPage, Release, Upstream, WheelLink

# A release with wheels and no sdist (yet): it waits, and is queued when an sdist appears.
NO_SDIST = "no-sdist"

# A transaction of its own each time it is entered: ``Database.session``.
Sessions = Callable[[], AbstractContextManager[Session]]

logger = logging.getLogger(__name__)


def _length(column: Any) -> int:
    """The length of a String column: what the database (PostgreSQL strictly) will store."""
    return int(column.type.length)


# The upstream's values are checked against these before they reach the database.
NAME_MAX = _length(Project.name)
DISPLAY_NAME_MAX = _length(Project.display_name)
VERSION_MAX = _length(VersionRow.version)
FILENAME_MAX = _length(VersionRow.sdist_filename)
SHA256_MAX = _length(VersionRow.sdist_sha256)
REQUIRES_PYTHON_MAX = _length(VersionRow.requires_python)


@dataclass
class SyncReport:
    """What a sync did, and what it skipped: (project, why) for each project or item left out."""

    synced: int = 0  # projects the upstream answered for, changed or not
    changed: int = 0
    new: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)

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
    return [max(matching, key=Version)]


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
            row = VersionRow(version=release.version, priority=0)
            project.versions.append(row)
            added += 1
        if row.yanked != release.yanked:
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


def tracked(session: Session) -> list[Project]:
    """Projects whose versions ``sync`` refreshes: watched, or with a requested version."""
    requested = select(VersionRow.project_id).where(VersionRow.priority > 0)
    return list(
        session.scalars(
            select(Project).where(or_(Project.watched, Project.id.in_(requested))).order_by(Project.name)
        )
    )


def sync(
    sessions: Sessions,
    upstream: Upstream,
    progress: Callable[[str], None] = lambda _name: None,
    glibc: tuple[int, int] | None = None,
) -> SyncReport:
    """Refresh every tracked project (one conditional request each), one transaction per project.

    A project the upstream no longer has, or whose page is bad, is reported and skipped: the
    others are synced all the same. No transaction is open while a page is fetched.
    """
    report = SyncReport()
    with sessions() as session:
        todo = [(p.name, p.etag) for p in tracked(session)]
    for name, etag in todo:
        progress(name)
        try:
            page = upstream.project(name, etag)
        except PiwheelsError as exc:  # gone (InputError) or a bad page (UpstreamError)
            report.problem(name, str(exc))
            continue
        report.synced += 1
        if page is None:
            continue
        problems: list[str] = []
        try:
            with sessions() as session:
                project = session.scalar(select(Project).where(Project.name == name))
                if project is None:  # forgotten since the list was read
                    continue
                added = apply_page(session, project, page, problems, glibc)
        except (DataError, IntegrityError) as exc:  # what the checks before missed: this project only
            report.problem(name, f"{name}: not recorded: {str(exc.orig).splitlines()[0]}")
            continue
        report.changed += 1
        report.new += added
        for problem in problems:
            report.problem(name, problem)
    return report


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


def _batched(items: Iterable[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    batch: list[tuple[str, str]] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def find(session: Session, name: str, version: str | None = None) -> tuple[Project, list[VersionRow]]:
    """A tracked project and its versions (or the one ``version``); InputError names what is missing."""
    canonical = canonicalize_name(name)
    project = session.scalar(select(Project).where(Project.name == canonical))
    if project is None:
        raise InputError(f"{name}: not a known project (add it first)")
    if version is None:
        return project, list(project.versions)
    try:
        normal = str(Version(version))
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


def skip_reason(project: Project, row: VersionRow | None = None) -> str | None:
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
        select(VersionRow.project_id, VersionRow.version, VersionRow.skip_reason).where(
            VersionRow.skip_reason.is_not(None)
        )
    ).all()
    names: dict[int, str] = {}
    ids = sorted({project_id for project_id, _v, _r in versions})
    for start in range(0, len(ids), 500):  # bounded IN lists
        chunk = ids[start : start + 500]
        names.update(session.execute(select(Project.id, Project.name).where(Project.id.in_(chunk))).tuples())
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
    queue_upkeep.touch(session, versions=ids)
    session.execute(delete(Coverage).where(Coverage.version_id.in_(ids), cov_abi))
    session.execute(update(Build).where(Build.version_id.in_(ids), finished, for_abi).values(superseded=True))
    project.dirty = True
    return result
