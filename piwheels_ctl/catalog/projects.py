"""The projects and versions we track: add them from the upstream, find, remove, skip and unskip."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion
from packaging.version import parse as parse_version
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..abi import AbiTags, Glibc, marker_environment, runs_on
from ..db.batches import in_batches
from ..db.models import Abi, Project, Version
from ..errors import InputError
from ..queue.coverage import abi_tags
from .columns import DISPLAY_NAME_MAX
from .report import Report
from .requirements import Wanted
from .sync import apply_page, tracked_clause

if TYPE_CHECKING:
    from ..upstream.page import IndexPage, IndexRelease
    from ..upstream.source import Upstream


@dataclass(frozen=True)
class Requested:
    """A project ``add`` tracks now: the versions to build (empty: every version), and whether
    the request is skipped as a whole (said as a problem)."""

    name: str  # canonical
    versions: list[str]
    skipped: bool


@dataclass
class AddReport(Report):
    """What ``add`` tracks now, in the order asked for; a problem for each release or skip left out."""

    added: list[Requested] = field(default_factory=list)


def _fits(release: IndexRelease, abis: list[AbiTags]) -> list[AbiTags]:
    return [abi for abi in abis if runs_on(release.requires_python, abi)]


def _choose(page: IndexPage, wanted: Wanted, abis: list[AbiTags], report: AddReport) -> list[str]:
    """The versions of ``page`` that ``wanted`` asks to build (empty list: watch them all).

    A range asks, as pip would, for the newest version that is not yanked and whose
    Requires-Python the interpreter accepts: one for each of the farm's ``abis`` (every
    release, when the farm has none yet). A pinned version is taken as it is, and said (as a
    problem) when no ABI of the farm can install it.
    """
    if wanted.specifier is None:
        return []
    # A release counts with an sdist to build, or a wheel of the upstream's that may cover us.
    candidates = {r.version: r for r in page.releases if r.sdist_url or r.wheels}
    pinned = [s for s in wanted.specifier if s.operator in ("==", "===") and "*" not in s.version]
    matching = [candidates[v] for v in wanted.specifier.filter(candidates)]
    if pinned:
        if not matching:
            raise InputError(
                f"{wanted.source}: {wanted.name} has no sdist or wheel of version {wanted.specifier}"
            )
        for release in matching:
            if abis and not _fits(release, abis):
                report.problem(page.name, _fits_none(page.name, release, abis))
        return [r.version for r in matching]
    if not matching:
        raise InputError(f"{wanted.source}: no sdist or wheel of {wanted.name} matches {wanted.specifier!s}")
    newest_first = sorted(matching, key=lambda r: parse_version(r.version), reverse=True)
    unyanked = [r for r in newest_first if not r.yanked]
    if not unyanked:
        raise InputError(
            f"{wanted.source}: every version of {wanted.name} matching {wanted.specifier!s} is yanked"
        )
    if not abis:
        return [unyanked[0].version]
    chosen: dict[str, None] = {}
    for abi in abis:
        fitting = next((r for r in unyanked if runs_on(r.requires_python, abi)), None)
        if fitting is None:
            report.problem(
                page.name, f"{page.name}: no version matching {wanted.specifier!s} installs on {abi.tag}"
            )
        else:
            chosen[fitting.version] = None
    if not chosen:
        raise InputError(f"{wanted.source}: {_fits_none(page.name, unyanked[0], abis)}")
    return list(chosen)


def _fits_none(name: str, release: IndexRelease, abis: list[AbiTags]) -> str:
    pythons = ", ".join(sorted({f"{a.version[0]}.{a.version[1]}" for a in abis}))
    return (
        f"{name} {release.version} requires Python {release.requires_python}: "
        f"no Python of this farm ({pythons}) can build it"
    )


def active_abis(session: Session) -> list[AbiTags]:
    """The ABIs the farm builds for now: some builder has an interpreter for each."""
    return [abi_tags(abi) for abi in session.scalars(select(Abi).where(Abi.active).order_by(Abi.tag))]


def _abis_for(wanted: Wanted, abis: Sequence[AbiTags]) -> list[AbiTags]:
    """The ABIs whose interpreters ``wanted``'s environment marker selects (all, without one)."""
    if wanted.marker is None:
        return list(abis)
    return [abi for abi in abis if wanted.marker.evaluate(marker_environment(abi))]


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
    glibc: Glibc = None,
    farm_abis: Sequence[AbiTags] = (),
) -> AddReport:
    """Track the wanted projects: fetch each page first, so a bad name or page changes nothing.

    The session is first used once every page is in: no transaction is held over the network.
    Releases left out (values too long for the database), and skipped ones, are the report's
    problems; each project comes back with its versions to build (empty: all of them) and
    whether the request is skipped as a whole. ``farm_abis`` (``active_abis``) decide which
    versions a range asks for and which markers apply; without them, every release may.
    """
    report = AddReport()
    asked = []
    for want in wanted:
        abis = _abis_for(want, farm_abis)
        if farm_abis and not abis:
            report.problem(
                want.canonical,
                f"{want.source}: {want.name} left out: no Python of this farm has {want.marker}",
            )
        else:
            asked.append((want, abis))
    pages = [(w, abis, upstream.project(w.canonical)) for w, abis in asked]
    for want, abis, page in pages:
        assert page is not None  # no etag was sent, so the page came back
        versions = _choose(page, want, abis, report)
        project = _project(session, page.name, page.display_name)
        apply_page(session, project, page, report, glibc)
        if not versions:
            project.watched = True
        said = 0
        for row in project.versions:
            if row.version in versions:
                row.priority = max(row.priority, 1)
                if row.skip_reason and not project.skip_reason:
                    said += 1
                    report.problem(
                        page.name,
                        f"{page.name}=={row.version} is skipped ({row.skip_reason}): "
                        f"'piwheels-ctl unskip {page.name}=={row.version}' to build it",
                    )
        if project.skip_reason:
            said += 1
            report.problem(
                page.name,
                f"{page.name} is skipped ({project.skip_reason}): "
                f"'piwheels-ctl unskip {page.name}' to build it",
            )
        skipped_all = bool(project.skip_reason) or (bool(versions) and said == len(versions))
        todo = [v for v in versions if not _skipped_version(project, v)]
        report.added.append(Requested(page.name, todo, skipped_all))
    return report


def tracked(session: Session) -> list[Project]:
    """Projects whose versions ``sync`` refreshes: watched, or with a requested version."""
    return list(session.scalars(select(Project).where(tracked_clause()).order_by(Project.name)))


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
    for chunk in in_batches(sorted({project_id for project_id, _v, _r in versions})):
        names.update(
            session.execute(select(Project.id, Project.name).where(Project.id.in_(chunk))).tuples().all()
        )
    result += [(names[p], v, str(r)) for p, v, r in versions]
    return sorted(result, key=lambda item: (item[0], item[1] or ""))
