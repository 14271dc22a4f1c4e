"""The human side of the index: a page and a JSON document per project, rendered from the database.

Only renders; ``publisher`` writes what this returns (atomically, only what changed). A project's
page shows each release (newest first) against the farm's ABIs: built, covered by a wheel of
another ABI, imported, failed (reason, detail, suggested packages, log), skipped, pending, ...
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.parser import HeaderParser
from typing import Any

import packaging.version
from packaging.version import InvalidVersion
from packaging.version import parse as parse_version
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ..abi import AbiTags, runs_on
from ..db.batches import in_batches
from ..db.models import (
    Abi,
    Build,
    Builder,
    BuildStatus,
    Coverage,
    File,
    Project,
    ReleaseCheck,
    UpstreamCoverage,
    Version,
)
from ..queue import releases as os_releases
from .templating import templates

# Each state of a (release, ABI) cell, as the page says it.
STATES = {
    "built": "built",
    "covered": "covered by another wheel",
    "imported": "imported wheel",
    "mirrored": "mirrored from upstream",
    "upstream": "on the upstream, not built",
    "failed": "failed",
    "building": "building now",
    "skipped": "skipped",
    "pending": "pending",
    "no-sdist": "no sdist",
    "excluded": "not for this Python",
    "not-requested": "not requested",
}


@dataclass
class Cell:
    """How one release stands on one ABI."""

    state: str
    file: str | None = None
    url: str | None = None
    size: int | None = None
    reason: str | None = None
    detail: str | None = None
    packages: list[str] | None = None  # Debian packages that would fix a failure, where known
    why: list[str] | None = None  # why each of ``packages`` is listed
    evidence: str | None = None  # the part of the log the failure's reason was read from
    log: str | None = None
    duration: float | None = None
    builder: str | None = None
    # What the build noted without failing: a compiled module whose own init raised at import
    # on the builder (a missing Python dependency).
    notes: list[str] | None = None
    retried: str | None = None  # the build timed out once and was built again: how


@dataclass
class WheelFile:
    """A wheel of a release, as the page lists it."""

    filename: str
    url: str
    size: int
    sha256: str
    requires_python: str | None
    apt_packages: list[str] | None  # Debian packages the wheel needs at run time, where known
    built_on: str | None = None  # the OS release it was built on
    # OS release -> how its index stands with this file: "built there", "no compiled code",
    # "listed everywhere" (mirrored, or older than releases), "loaded there", or the check's
    # state ("check pending", "checking", "refused: <the loader's message>").
    os_releases: dict[str, str] = field(default_factory=dict)


@dataclass
class Release:
    version: str
    released: str | None
    yanked: bool
    skip_reason: str | None
    sdist: str | None
    cells: dict[str, Cell] = field(default_factory=dict)
    files: list[WheelFile] = field(default_factory=list)
    folded: bool = False  # neither asked for nor built: folded away on the page


# The states of a release nobody asked for: such a release, without files, is folded away.
UNASKED = {"not-requested", "excluded", "no-sdist"}
# The states where a wheel installs.
WHEEL_STATES = {"built", "covered", "imported", "mirrored"}


@dataclass
class Summary:
    """What a project page answers first: what it is, where it lives, what this index has."""

    summary: str | None  # from the newest wheel's METADATA
    homepage: str | None  # its home page or source (http(s) only)
    newest_built: str | None  # the newest release with a wheel
    abis: dict[str, tuple[str, str]] = field(default_factory=dict)  # ABI -> (state, release)


@dataclass
class ProjectPage:
    name: str
    display_name: str
    watched: bool
    skip_reason: str | None
    abis: list[str]
    releases: list[Release]
    summary: Summary = field(default_factory=lambda: Summary(None, None, None))
    os_releases: list[str] = field(default_factory=list)  # the farm's OS releases, each an index
    native_only: str | None = None  # why cross builders leave the project to native ones

    def as_json(self) -> dict[str, Any]:
        """The page as JSON data (``dataclasses.asdict`` without its deep copies, which cost
        more than all the rest of a full publish)."""
        data = dict(vars(self))
        data["summary"] = {**vars(self.summary), "abis": {k: list(v) for k, v in self.summary.abis.items()}}
        data["releases"] = [
            {
                **vars(release),
                "cells": {tag: vars(cell) for tag, cell in release.cells.items()},
                "files": [vars(f) for f in release.files],
            }
            for release in self.releases
        ]
        data["meta"] = {"api-version": JSON_VERSION}
        return data


JSON_VERSION = "1.0"


def version_key(version: str) -> tuple[int, packaging.version.Version | str]:
    """The order of releases (the index's and the pages'): by PEP 440, oldest first."""
    try:
        return (1, parse_version(version))
    except InvalidVersion:
        # Legacy version strings sort before every valid one rather than failing the run.
        return (0, version)


def suggested_packages(build: Build) -> list[str] | None:
    """The Debian packages that would fix a failed build, where known (looked up in the builder
    release's Contents index when the build was recorded, or by ``failures``), best first."""
    value = build.failure_packages
    if not isinstance(value, list):
        return None
    return [str(p["package"]) if isinstance(p, dict) else str(p) for p in value]


def suggested_why(build: Build) -> list[str] | None:
    """Why each of ``suggested_packages`` is listed ("" for those recorded without a reason)."""
    value = build.failure_packages
    if not isinstance(value, list):
        return None
    return [str(p.get("why", "")) if isinstance(p, dict) else "" for p in value]


def runtime_packages(file: File) -> list[str] | None:
    """The Debian packages a wheel needs at run time, where known (the agent's report, when the
    schema records it; None until then)."""
    value = getattr(file, "apt_packages", None)
    return [str(p) for p in value] if isinstance(value, list) else None


def log_url(log_path: str | None) -> str | None:
    """The site path of a stored log (``<project>/<id>.log.gz`` → ``logs/<project>/<id>.log``)."""
    if not log_path or not log_path.endswith(".log.gz"):
        return None
    return "logs/" + log_path.removesuffix(".gz")


def _iso(when: datetime | None) -> str | None:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if when else None


def load_pages(session: Session, project_ids: Iterable[int]) -> list[ProjectPage]:
    """The pages of these projects (those without any version have none)."""
    ids = list(project_ids)
    if not ids:
        return []
    return _assemble(ids, _load_rows(session, ids))


@dataclass
class _Rows:
    """What the pages of some projects are made of, as read from the database."""

    projects: dict[int, Project]
    versions: dict[int, list[Version]]  # by project id
    builds: dict[tuple[int, int], list[Build]]  # by (version id, ABI id); not superseded
    files: dict[int, File]  # by file id
    coverage: dict[tuple[int, int], int]  # (version id, ABI id) -> the file that installs there
    upstream: set[tuple[int, int]]  # (version id, ABI id) the upstream has a wheel for
    abis: list[Abi]  # the active ones and those shown by a build or a wheel, by tag
    builders: dict[int, str]
    checks: dict[int, dict[str, ReleaseCheck]] = field(default_factory=dict)  # file -> release -> check
    os_releases: list[str] = field(default_factory=list)


def _load_rows(session: Session, ids: list[int]) -> _Rows:
    """The rows of these projects' pages: each ``IN (...)`` list bounded, however many versions."""
    projects: dict[int, Project] = {}
    versions: dict[int, list[Version]] = {}
    for batch in in_batches(ids):
        projects.update((p.id, p) for p in session.scalars(select(Project).where(Project.id.in_(batch))))
        for row in session.scalars(select(Version).where(Version.project_id.in_(batch))):
            versions.setdefault(row.project_id, []).append(row)
    version_ids = [v.id for rows in versions.values() for v in rows]
    builds: dict[tuple[int, int], list[Build]] = {}
    files: dict[int, File] = {}
    coverage: dict[tuple[int, int], int] = {}
    upstream: set[tuple[int, int]] = set()
    for batch in in_batches(version_ids):
        query = select(Build).where(Build.version_id.in_(batch), Build.superseded.is_(False))
        for build in session.scalars(query):
            builds.setdefault((build.version_id, build.abi_id), []).append(build)
        files.update((f.id, f) for f in session.scalars(select(File).where(File.version_id.in_(batch))))
        for cov in session.scalars(select(Coverage).where(Coverage.version_id.in_(batch))):
            coverage.setdefault((cov.version_id, cov.abi_id), cov.file_id)
        pairs = select(UpstreamCoverage.version_id, UpstreamCoverage.abi_id)
        upstream.update(session.execute(pairs.where(UpstreamCoverage.version_id.in_(batch))).tuples())
    used = {abi for _, abi in coverage} | {b.abi_id for rows in builds.values() for b in rows}
    abis = list(session.scalars(select(Abi).where(or_(Abi.active, Abi.id.in_(used))).order_by(Abi.tag)))
    builders = dict(session.execute(select(Builder.id, Builder.name)).tuples().all())
    checks = os_releases.checks_of(session, files)
    farm = os_releases.farm_releases(session)
    return _Rows(projects, versions, builds, files, coverage, upstream, abis, builders, checks, farm)


def release_states(f: File, farm: list[str], checks: dict[str, ReleaseCheck]) -> dict[str, str]:
    """How each of the farm's OS releases stands with the file ``f`` (see ``WheelFile``)."""
    states = {}
    for release in farm:
        check = checks.get(release)
        if not os_releases.compiled(f.platform_tag):
            states[release] = "no compiled code"
        elif f.release is None:
            states[release] = "listed everywhere"
        elif f.release == release:
            states[release] = "built there"
        elif check is None or check.status == os_releases.PENDING:
            states[release] = "check pending"
        elif check.status == os_releases.PASSED:
            states[release] = "loaded there"
        elif check.status == os_releases.REFUSED:
            states[release] = "refused: " + "; ".join(check.failures or ["did not load"])
        else:
            states[release] = "checking"
    return states


def _assemble(ids: list[int], rows: _Rows) -> list[ProjectPage]:
    """The pages of ``ids``, in that order, from their rows."""
    build_abi = {b.id: b.abi_id for tried in rows.builds.values() for b in tried}
    by_version: dict[int, list[File]] = {}
    for f in rows.files.values():
        by_version.setdefault(f.version_id, []).append(f)
    pages = []
    for project_id in ids:
        project = rows.projects.get(project_id)
        if project is None or not rows.versions.get(project_id):
            continue
        releases = []
        for row in sorted(rows.versions[project_id], key=lambda v: version_key(v.version), reverse=True):
            release = Release(
                version=row.version,
                released=_iso(row.release_time),
                yanked=row.yanked,
                skip_reason=row.skip_reason or project.skip_reason,
                sdist=row.sdist_filename,
            )
            for abi in rows.abis:
                tried = rows.builds.get((row.id, abi.id), [])
                latest = max(tried, key=lambda b: (b.started_at, b.id), default=None)
                covered = rows.files.get(rows.coverage.get((row.id, abi.id), -1))
                cell = _cell(project, row, abi, latest, covered, build_abi, rows.builders)
                if cell.state in ("pending", "no-sdist") and (row.id, abi.id) in rows.upstream:
                    cell = Cell("upstream")  # not built: the upstream's wheel (not mirrored yet)
                release.cells[abi.tag] = cell
            for f in sorted(by_version.get(row.id, []), key=lambda f: f.filename):
                release.files.append(
                    WheelFile(
                        filename=f.filename,
                        url=f"simple/{project.name}/{f.filename}",
                        size=f.size,
                        sha256=f.sha256,
                        requires_python=f.requires_python or None,
                        apt_packages=runtime_packages(f),
                        built_on=f.release,
                        os_releases=release_states(f, rows.os_releases, rows.checks.get(f.id, {})),
                    )
                )
            release.folded = not release.files and all(c.state in UNASKED for c in release.cells.values())
            releases.append(release)
        newest = _newest_file(rows.versions[project_id], by_version)
        pages.append(
            ProjectPage(
                name=project.name,
                display_name=project.display_name,
                watched=project.watched,
                skip_reason=project.skip_reason,
                abis=[a.tag for a in rows.abis],
                releases=releases,
                summary=summarize(releases, [a.tag for a in rows.abis], newest),
                os_releases=rows.os_releases,
                native_only=project.native_only,
            )
        )
    return pages


def _newest_file(versions: list[Version], by_version: dict[int, list[File]]) -> File | None:
    with_files = [v for v in versions if by_version.get(v.id)]
    if not with_files:
        return None
    newest = max(with_files, key=lambda v: version_key(v.version))
    return max(by_version[newest.id], key=lambda f: f.filename)


def summarize(releases: list[Release], abis: list[str], newest: File | None) -> Summary:
    """The top of a page: the summary and home page of the newest wheel's METADATA (kept in
    the database, no request), the newest release with a wheel, and where each ABI stands: its
    newest release with a wheel, else the newest release asked for."""
    summary, homepage = metadata_summary(newest.core_metadata if newest is not None else "")
    built = [r for r in releases if r.files]
    result = Summary(summary, homepage, built[0].version if built else None)
    for abi in abis:
        cells = [(r.cells[abi].state, r.version) for r in releases if abi in r.cells]
        wheel = next(((state, v) for state, v in cells if state in WHEEL_STATES), None)
        asked = next(((state, v) for state, v in cells if state not in UNASKED), None)
        chosen = wheel or asked
        if chosen is not None:
            result.abis[abi] = chosen
    return result


# Project-URL labels that name the project's home, best first (PEP 753's normalized forms).
HOME_LABELS = ("homepage", "source", "sourcecode", "repository", "documentation")


def metadata_summary(text: str) -> tuple[str | None, str | None]:
    """The Summary and the home page (Home-page, or a Project-URL) of a METADATA text."""
    if not text:
        return None, None
    headers = HeaderParser().parsestr(text, headersonly=True)
    summary = " ".join(str(headers.get("Summary") or "").split())[:300] or None
    urls: dict[str, str] = {}
    for entry in headers.get_all("Project-URL") or []:
        label, _, url = str(entry).partition(",")
        key = "".join(ch for ch in label.lower() if ch.isalnum())
        urls.setdefault(key, url.strip())
    candidates = [urls.get(label) for label in HOME_LABELS] + [str(headers.get("Home-page") or "").strip()]
    candidates += list(urls.values())
    home = next((u for u in candidates if u and u.startswith(("https://", "http://")) and " " not in u), None)
    return summary, home


def _cell(
    project: Project,
    row: Version,
    abi: Abi,
    build: Build | None,
    covered: File | None,
    build_abi: dict[int, int],
    builders: dict[int, str],
) -> Cell:
    """The state of ``row`` on ``abi``: a wheel that installs there first, then the build."""
    if covered is not None:
        if covered.mirrored:
            state = "mirrored"
        elif covered.build_id is None:
            state = "imported"
        elif build_abi.get(covered.build_id) == abi.id:
            state = "built"
        else:
            state = "covered"
        cell = Cell(state, file=covered.filename, url=f"simple/{project.name}/{covered.filename}",
                    size=covered.size)  # fmt: skip
        if state == "built" and build is not None:
            cell.log, cell.duration = log_url(build.log_path), build.duration
            cell.builder = builders.get(build.builder_id or -1)
            cell.notes = build.notes or None
            cell.retried = build.retried
        return cell
    if build is not None and build.status is not BuildStatus.SUCCESS:
        if build.status is BuildStatus.BUILDING:
            return Cell("building", builder=builders.get(build.builder_id or -1))
        return Cell(
            "failed",
            reason=build.failure_reason,
            detail=build.failure_detail,
            packages=suggested_packages(build),
            why=suggested_why(build),
            evidence=build.failure_evidence,
            log=log_url(build.log_path),
            duration=build.duration,
            builder=builders.get(build.builder_id or -1),
            retried=build.retried,
        )
    skip = row.skip_reason or project.skip_reason
    if row.sdist_url is None:
        return Cell("no-sdist")
    if skip:
        return Cell("skipped", reason=skip)
    if not runs_on(row.requires_python, AbiTags(abi.python_tag, abi.abi_tag, abi.platform_tag)):
        return Cell("excluded", detail=f"Requires-Python {row.requires_python}")
    if not (project.watched or row.priority > 0) or (row.yanked and row.priority <= 0):
        return Cell("not-requested")
    return Cell("pending")


def render_project(page: ProjectPage, site: dict[str, Any]) -> dict[str, bytes]:
    """The files of one project's page, by path below www: ``index.html`` and ``json``."""
    html = templates.get_template("project.html.j2").render(
        page=page, site=site, states=STATES, root="../../"
    )
    # No indent: only then does the json module encode in C.
    data = json.dumps(page.as_json(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return {
        f"project/{page.name}/index.html": html.encode("utf-8"),
        f"project/{page.name}/json": (data + "\n").encode("utf-8"),
    }
