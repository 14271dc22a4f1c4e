"""The projects and versions we track: add, remove, sync from the upstream, skip and rebuild."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version
from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.orm import Session

from .errors import InputError
from .models import Build, BuildStatus, Coverage, Project, utcnow
from .models import Version as VersionRow

if TYPE_CHECKING:
    from .upstream import ProjectPage, Upstream

BINARY_ONLY = "binary only"


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
    versions = [r.version for r in page.releases if r.sdist_url]
    pinned = [s for s in wanted.specifier if s.operator in ("==", "===") and "*" not in s.version]
    matching = list(wanted.specifier.filter(versions))
    if pinned:
        if not matching:
            raise InputError(f"{wanted.source}: {wanted.name} has no sdist of version {wanted.specifier}")
        return matching
    if not matching:
        raise InputError(f"{wanted.source}: no sdist of {wanted.name} matches {wanted.specifier!s}")
    return [max(matching, key=Version)]


def apply_page(session: Session, project: Project, page: ProjectPage) -> int:
    """Bring the versions of ``project`` up to ``page``; the number of new versions."""
    existing = {v.version: v for v in project.versions}
    added = 0
    for release in page.releases:
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
        if release.sdist_url is None:
            row.skip_reason = row.skip_reason or BINARY_ONLY
        elif row.skip_reason == BINARY_ONLY:
            row.skip_reason = None
    project.display_name = page.display_name
    project.etag = page.etag
    project.synced_at = utcnow()
    return added


def _project(session: Session, name: str, display: str) -> Project:
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        project = Project(name=name, display_name=display, watched=False, dirty=True)
        session.add(project)
    return project


def add(session: Session, upstream: Upstream, wanted: Iterable[Wanted]) -> list[tuple[str, list[str]]]:
    """Track the wanted projects: fetch each page first, so a bad name changes nothing."""
    pages = [(w, upstream.project(w.canonical)) for w in wanted]
    added = []
    for want, page in pages:
        assert page is not None  # no etag was sent, so the page came back
        versions = _choose(page, want)
        project = _project(session, page.name, page.display_name)
        apply_page(session, project, page)
        if not versions:
            project.watched = True
        for row in project.versions:
            if row.version in versions:
                row.priority = max(row.priority, 1)
        added.append((page.name, versions))
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
    session: Session, upstream: Upstream, progress: Callable[[str], None] = lambda _name: None
) -> tuple[int, int]:
    """Refresh every tracked project (one conditional request each): (projects changed, new versions)."""
    changed = new = 0
    for project in tracked(session):
        progress(project.name)
        page = upstream.project(project.name, project.etag)
        if page is not None:
            changed += 1
            new += apply_page(session, project, page)
    return changed, new


def sync_all(session: Session, upstream: Upstream, chunk: int = 10_000) -> int:
    """Record every project name of the upstream without fetching each one; the number added."""
    known = set(session.scalars(select(Project.name)))
    added = 0
    for batch in _batched(
        ((name, display) for name, display in upstream.project_names() if name not in known), chunk
    ):
        rows = {name: display for name, display in batch}
        session.execute(
            insert(Project),
            [{"name": n, "display_name": d, "watched": False, "dirty": False} for n, d in rows.items()],
        )
        known.update(rows)
        added += len(rows)
    return added


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
    return len(versions)


def rebuild(session: Session, name: str, version: str | None) -> int:
    """Put versions back in the queue, first; their finished builds stay as history, their wheels served."""
    _project_row, versions = find(session, name, version)
    ids = [v.id for v in versions if v.sdist_url]
    session.execute(delete(Coverage).where(Coverage.version_id.in_(ids)))
    session.execute(
        update(Build)
        .where(Build.version_id.in_(ids), Build.status != BuildStatus.BUILDING)
        .values(superseded=True)
    )
    for row in versions:
        if row.id in ids:
            row.priority = max(row.priority, 1)
    return len(ids)
