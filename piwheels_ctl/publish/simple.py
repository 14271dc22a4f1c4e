"""The simple index of a project (PEP 503 HTML, PEP 691 JSON, PEP 658 metadata files) and the root
index: read from the database, rendered to a dict or text, then written (only what changed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Exists, and_, exists, or_, select
from sqlalchemy.orm import Session

from ..db.batches import BATCH, in_batches
from ..db.models import File, Project, Version
from ..files import sha256_or_none, write_if_changed
from ..queue import releases
from . import rootindex
from .pages import version_key
from .templating import templates

log = logging.getLogger(__name__)

API_VERSION = "1.1"
CANONICAL = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


# The form of the published tree, kept in it (``FORMAT_FILE``): a release that changes what it
# writes raises it, and the first publish that finds the tree older rewrites every page once.
# 1: before the stamp (JSON pages of 0f4a855 carried "dist-info-metadata" objects, which pip
# 22.3 to 23.1 crash on); 2: PEP 714's "core-metadata" alone in JSON.
FORMAT = 2
FORMAT_FILE = "piwheels-format"


def tree_format(www_dir: Path) -> int | None:
    """The form the published tree in ``www_dir`` was written in (1: published, unstamped;
    None: never published: a recorder's pages alone, before the first publish, are new)."""
    try:
        text = (www_dir / FORMAT_FILE).read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return 1 if (www_dir / "simple" / rootindex.HTML).exists() else None
    except (OSError, UnicodeDecodeError):
        return 1
    return int(text) if text.isdigit() else 1


def stamp_format(www_dir: Path) -> None:
    """Record that every page of the tree is now in ``FORMAT``."""
    www_dir.mkdir(parents=True, exist_ok=True)
    write_if_changed(www_dir / FORMAT_FILE, f"{FORMAT}\n".encode("ascii"))


@dataclass(frozen=True)
class IndexFile:
    """One wheel as the index shows it."""

    file_id: int
    filename: str
    version: str
    sha256: str
    size: int
    requires_python: str | None
    yanked: bool
    yanked_reason: str | None
    metadata_sha256: str
    uploaded_at: datetime
    url: str  # relative to the project's page: the file itself, or a release index's link to it


# A project's index pages to write: its folder, display name and files.
Listing = tuple[Path, str, list[IndexFile]]


def has_files() -> Exists:
    """Whether a project has a wheel (then the root index lists it)."""
    return exists().where(Version.project_id == Project.id, File.version_id == Version.id)


def load_files(
    session: Session, project_ids: list[int], release: str | None = None
) -> dict[int, list[IndexFile]]:
    """Every file of these projects, in index order, without the (large) metadata text; with
    ``release``, those that release's index lists (``releases.listed_in``), linked to where they
    lie (the wheels and their metadata are kept once, in ``www/simple/<project>/``)."""
    query = (
        select(
            Project.name,
            File.platform_tag,
            File.release,
            Version.project_id,
            Version.version,
            Version.yanked,
            Version.yanked_reason,
            File.id,
            File.filename,
            File.sha256,
            File.size,
            File.requires_python,
            File.metadata_sha256,
            File.uploaded_at,
        )
        .join(File.version)
        .join(Version.project)
    )
    result: dict[int, list[IndexFile]] = {}
    for batch in in_batches(project_ids):
        rows = session.execute(query.where(Version.project_id.in_(batch))).all()
        passed = releases.passed_checks(session, [r.id for r in rows])
        for row in rows:
            if not _safe_filename(row.filename):
                continue
            if release is None and not releases.listed_anywhere(
                platform_tag=row.platform_tag, built_on=row.release, passed=passed.get(row.id, ())
            ):
                continue  # cross-built, not yet loaded on its target
            if release is not None and not releases.listed_in(
                release, platform_tag=row.platform_tag, built_on=row.release, passed=passed.get(row.id, ())
            ):
                continue
            result.setdefault(row.project_id, []).append(
                IndexFile(
                    file_id=row.id,
                    filename=row.filename,
                    version=row.version,
                    sha256=row.sha256,
                    size=row.size,
                    requires_python=row.requires_python or None,
                    yanked=row.yanked,
                    yanked_reason=row.yanked_reason,
                    metadata_sha256=row.metadata_sha256,
                    uploaded_at=row.uploaded_at,
                    url=row.filename if release is None else f"../../../simple/{row.name}/{row.filename}",
                )
            )
    for files in result.values():
        files.sort(key=lambda f: (version_key(f.version), f.filename))
    return result


def _safe_filename(filename: str) -> bool:
    if "/" in filename or "\\" in filename or filename.startswith(".") or "\0" in filename:
        log.warning("not publishing file %r: not a plain file name", filename)
        return False
    return True


def metadata_missing(listings: list[Listing]) -> list[IndexFile]:
    """The files whose ``.metadata`` file is absent or not the bytes the page advertises."""
    return [
        f
        for project_dir, _, project_files in listings
        for f in project_files
        if sha256_or_none(project_dir / f"{f.filename}.metadata") != f.metadata_sha256
    ]


def load_metadata(session: Session, files: list[IndexFile]) -> dict[int, bytes]:
    """The PEP 658 metadata file contents of ``files``, by file id."""
    result: dict[int, bytes] = {}
    for batch in in_batches(files):
        by_id = {f.file_id: f for f in batch}
        texts = session.execute(select(File.id, File.core_metadata).where(File.id.in_(list(by_id))))
        for file_id, text in texts:
            data = text.encode("utf-8")
            if hashlib.sha256(data).hexdigest() != by_id[file_id].metadata_sha256:
                # pip rejects metadata whose hash differs from the one the index advertises.
                log.warning("stored metadata of %s does not match its sha256", by_id[file_id].filename)
            result[file_id] = data
    return result


def project_json(name: str, files: list[IndexFile]) -> dict[str, Any]:
    """A project's PEP 691 page, as data."""
    versions = sorted({f.version for f in files}, key=version_key)
    return {
        "meta": {"api-version": API_VERSION},
        "name": name,
        "files": [
            {
                "filename": f.filename,
                "url": f.url,
                "hashes": {"sha256": f.sha256},
                "requires-python": f.requires_python,
                "yanked": (f.yanked_reason or True) if f.yanked else False,
                "size": f.size,
                "upload-time": f.uploaded_at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                # PEP 714: only "core-metadata" in JSON; pip 22.3 to 23.0 (Debian bookworm's)
                # crash on a "dist-info-metadata" object there.
                "core-metadata": {"sha256": f.metadata_sha256},
            }
            for f in files
        ],
        "versions": versions,
    }


def project_html(display_name: str, files: list[IndexFile]) -> str:
    """A project's PEP 503 page, as text."""
    return templates.get_template("simple_project.html.j2").render(
        api_version=API_VERSION, display_name=display_name, files=files
    )


def dumps(data: Any) -> bytes:
    """JSON as the index files hold it: compact, keys sorted, UTF-8."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def write_project(
    project_dir: Path,
    display_name: str,
    files: list[IndexFile],
    metadata: dict[int, bytes],
    *,
    prune: bool = True,
) -> None:
    """Write a project's pages, and the ``.metadata`` files of ``metadata`` (by file id); with
    ``prune``, remove metadata files of files no longer listed."""
    project_dir.mkdir(parents=True, exist_ok=True)
    for f in files:
        if f.file_id in metadata:
            write_if_changed(project_dir / f"{f.filename}.metadata", metadata[f.file_id])
    html = project_html(display_name, files)
    write_if_changed(project_dir / "index.json", dumps(project_json(project_dir.name, files)))
    write_if_changed(project_dir / "index.html", html.encode("utf-8"))
    if not prune:
        return
    published = {f"{f.filename}.metadata" for f in files}
    for stale in project_dir.glob("*.metadata"):
        if stale.name not in published:
            stale.unlink()


def write_projects(session: Session, listings: list[Listing], *, metadata: bool = True) -> None:
    """Write these projects' pages, and the metadata files they lack (read from ``session``;
    none with ``metadata`` False: a release's pages link to the files and metadata of the main
    index)."""
    texts = load_metadata(session, metadata_missing(listings)) if metadata else {}
    for project_dir, display_name, project_files in listings:
        write_project(project_dir, display_name, project_files, texts)


def remove_project(project_dir: Path) -> None:
    """Remove a project's pages and metadata files, leaving its wheels (the recorder's) alone."""
    if not project_dir.is_dir():
        return
    for page in [project_dir / "index.html", project_dir / "index.json"]:
        page.unlink(missing_ok=True)
    for metadata in project_dir.glob("*.metadata"):
        metadata.unlink()


def write_root(
    session: Session, simple: Path, withdraw_deleted: bool, shown: dict[str, bool] | None = None
) -> tuple[bool, dict[int, str | None]]:
    """Write the root index whole, streamed from the database in name order (bytewise, as
    ``rootindex`` keeps it); whether it changed, and the projects whose listing differs from
    their ``listed_name``.

    ``shown`` (a full publish's: False for each project whose pages it wrote, each from an earlier
    snapshot) gets True for each name the root lists. A listed project not in it got its first
    wheel after its pages were written: its pages, if missing, are written from the root's own
    snapshot before the root replaces the old one, so the root never links to a missing page.
    """
    listable: ColumnElement[bool] = has_files()
    if withdraw_deleted:
        listable = and_(listable, Project.deleted_at.is_(None))
    order = Project.name.collate("C") if session.get_bind().dialect.name == "postgresql" else Project.name
    rows = session.execute(
        select(
            Project.id, Project.name, Project.display_name, Project.listed_name, listable.label("listable")
        )
        .where(or_(listable, Project.listed_name.is_not(None)))
        .order_by(order)
        .execution_options(yield_per=BATCH)
    )
    listed: dict[int, str | None] = {}
    late: list[tuple[int, str, str]] = []  # listed, but no page written by this publish

    def projects() -> Iterator[tuple[str, str]]:
        for row in rows:
            want = row.display_name if row.listable and CANONICAL.match(row.name) else None
            if want != row.listed_name:
                listed[row.id] = want
            if want is not None:
                if shown is not None:
                    if row.name not in shown:
                        late.append((row.id, row.name, want))
                    shown[row.name] = True
                yield row.name, want
        # Read to the end, and the new root not yet in place: write the pages it is to link to.
        _write_missing(session, simple, late)

    return rootindex.write(simple, projects(), API_VERSION), listed


def _write_missing(session: Session, simple: Path, projects: list[tuple[int, str, str]]) -> None:
    """The pages of these projects (id, name, display name) that are not on disk, from ``session``."""
    missing = [
        (project_id, name, display)
        for project_id, name, display in projects
        if not ((simple / name / "index.html").is_file() and (simple / name / "index.json").is_file())
    ]
    files = load_files(session, [project_id for project_id, _, _ in missing])
    write_projects(session, [(simple / name, display, files.get(pid, [])) for pid, name, display in missing])
