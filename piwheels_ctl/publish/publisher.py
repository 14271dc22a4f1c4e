"""The static index (PEP 503 HTML, PEP 691 JSON, PEP 658 metadata), written from the database."""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import packaging.version
from packaging.version import InvalidVersion
from packaging.version import parse as parse_version
from sqlalchemy import ColumnElement, Exists, Select, and_, bindparam, exists, or_, select, update
from sqlalchemy.orm import Session

from ..db.engine import Database
from ..db.models import File, Project, Version
from ..errors import PiwheelsError
from . import pages, rootindex, stats

log = logging.getLogger(__name__)

API_VERSION = "1.1"
# Keeps every IN (...) list below SQLite's oldest limit of 999 bound parameters.
CHUNK = 500
_CANONICAL = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


@dataclass
class PublishResult:
    """What one ``publish()`` did: projects whose pages were regenerated or removed, and
    whether the root index content changed."""

    projects_written: int
    root_written: bool
    # Project id -> the dirty generation its page shows: what clear_published may clear.
    published: dict[int, int] = field(default_factory=dict)
    # Project id -> the name the root index now lists it under (None: not listed), where that
    # changed: what clear_published records in ``listed_name``.
    listed: dict[int, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class _IndexFile:
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


@dataclass
class _Written:
    """What publishing some projects' index pages did."""

    published: set[str] = field(default_factory=set)  # names whose pages were written
    emptied: set[str] = field(default_factory=set)  # names whose pages are to go
    listed: dict[str, str | None] = field(default_factory=dict)  # root changes, by name
    listed_ids: dict[int, str | None] = field(default_factory=dict)  # the same, by project id


# Where install instructions point when the setting ``public_url`` is not given: ``serve``'s default.
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8080/"


def publish_from(
    db: Database,
    www_dir: Path,
    *,
    full: bool = False,
    public_url: str | None = None,
    withdraw_deleted: bool = False,
    workers: int = 1,
) -> PublishResult:
    """Publish from one read-only snapshot, then clear the flags of what it published in a
    short write transaction of its own: a long publish never holds up a recorder. With ``full``,
    every project, a chunk at a time, each chunk in short transactions of its own, ``workers``
    chunks at once."""
    if full:
        return _publish_full(
            db, www_dir, public_url=public_url, withdraw_deleted=withdraw_deleted, workers=workers
        )
    with db.reader() as session:
        result = publish(session, www_dir, public_url=public_url, withdraw_deleted=withdraw_deleted)
    with db.session() as session:
        clear_published(session, result.published, result.listed)
    return result


def clear_published(
    session: Session, published: Mapping[int, int], listed: Mapping[int, str | None] | None = None
) -> None:
    """Clear ``dirty`` where the generation is still the one published; a project marked dirty
    again meanwhile keeps its flag for the next run. Record what the root index now lists."""
    table = Project.metadata.tables[Project.__tablename__]
    clear = (
        update(table)
        .where(table.c.id == bindparam("project"), table.c.dirty_generation == bindparam("generation"))
        .values(dirty=False)
    )
    pairs = list(published.items())
    for chunk in _chunks(pairs):
        session.execute(clear, [{"project": p, "generation": g} for p, g in chunk])
    record = update(table).where(table.c.id == bindparam("project")).values(listed_name=bindparam("listed"))
    for chunk in _chunks(list((listed or {}).items())):
        session.execute(record, [{"project": p, "listed": n} for p, n in chunk])


def _candidates() -> Select[Any]:
    return select(
        Project.id,
        Project.name,
        Project.display_name,
        Project.dirty_generation,
        Project.listed_name,
        Project.deleted_at,
    )


def publish(
    session: Session, www_dir: Path, *, public_url: str | None = None, withdraw_deleted: bool = False
) -> PublishResult:
    """Write the pages of dirty projects, patch the root index where the projects it lists
    changed, and write the project pages, front page and statistics for people; only reads the
    database (the flags are cleared by ``clear_published``). With ``withdraw_deleted``, projects
    deleted upstream are not listed."""
    simple = www_dir / "simple"
    projects = session.execute(_candidates().where(Project.dirty).order_by(Project.name)).all()
    written = _Written()
    for chunk in _chunks(projects):
        _publish_projects(session, simple, chunk, written, withdraw_deleted)
    # New pages exist before the root links to them; gone ones vanish after it stops.
    listed = written.listed_ids
    root_written = False
    patched = rootindex.patch(simple, written.listed, API_VERSION) if written.listed else False
    if patched is None or not (simple / rootindex.HTML).exists() or not (simple / rootindex.JSON).exists():
        root_written, listed = _write_root(session, simple, withdraw_deleted)
    else:
        root_written = patched
    for name in sorted(written.emptied):
        _remove_project(simple / name)
    _write_human_pages(session, www_dir, [row.id for row in projects], public_url=public_url)
    generations = {row.id: row.dirty_generation for row in projects}
    return PublishResult(
        projects_written=len(projects), root_written=root_written, published=generations, listed=listed
    )


def _publish_full(
    db: Database, www_dir: Path, *, public_url: str | None, withdraw_deleted: bool, workers: int
) -> PublishResult:
    """Every project's pages, CHUNK projects (by name) at a time, each chunk read in a snapshot
    of its own by one of ``workers`` processes and its flags cleared right after; then the root
    index, written whole as it streams from the database, stray pages removed, and every page
    for people, again by chunks. Memory: the names, and a chunk per worker."""
    simple = www_dir / "simple"
    written = _Written()
    count = 0
    ranges = _name_ranges(db)
    for generations, chunk_written in _each_range(
        db, workers, _index_pages, ranges, simple, withdraw_deleted
    ):
        with db.session() as session:
            clear_published(session, generations)
        count += len(generations)
        written.published |= chunk_written.published
        written.emptied |= chunk_written.emptied
    with db.reader() as session:
        root_written, listed = _write_root(session, simple, withdraw_deleted)
    with db.session() as session:
        clear_published(session, {}, listed)
    # Also the pages of projects the database does not hold any more at all.
    if simple.is_dir():
        written.emptied.update(
            d.name for d in simple.iterdir() if d.is_dir() and d.name not in written.published
        )
    for name in sorted(written.emptied):
        _remove_project(simple / name)
    site = _site(public_url)
    for _ in _each_range(db, workers, _people_pages, ranges, www_dir, site):
        pass
    with db.reader() as session:
        _write_site(session, www_dir, site, stats.INITIALS, prune=True)
    return PublishResult(projects_written=count, root_written=root_written)


# A chunk of a full publish: the projects whose names are after the first (None: from the
# start) and up to the second (None: to the end).
_Range = tuple[str | None, str | None]
_T = TypeVar("_T")


def _name_ranges(db: Database) -> list[_Range]:
    """The projects' names cut into ranges of CHUNK projects."""
    with db.reader() as session:
        names = session.scalars(select(Project.name).order_by(Project.name)).all()
    return list(itertools.pairwise([None, *names[CHUNK - 1 :: CHUNK], None]))


def _within(query: Select[Any], names: _Range) -> Select[Any]:
    after, upto = names
    if after is not None:
        query = query.where(Project.name > after)
    if upto is not None:
        query = query.where(Project.name <= upto)
    return query.order_by(Project.name)


def _index_pages(
    db: Database, names: _Range, simple: Path, withdraw_deleted: bool
) -> tuple[dict[int, int], _Written]:
    """The index pages of a range's projects (those with files, or dirty); the generations
    published, and what was written."""
    written = _Written()
    with db.reader() as session:
        rows = session.execute(_within(_candidates().where(or_(Project.dirty, _has_files())), names)).all()
        if rows:
            with _synced_together():
                _publish_projects(session, simple, rows, written, withdraw_deleted)
    return {row.id: row.dirty_generation for row in rows}, written


def _people_pages(db: Database, names: _Range, www_dir: Path, site: dict[str, Any]) -> None:
    """The pages for people of a range's projects that have a version."""
    with db.reader() as session:
        query = select(Project.id).where(exists().where(Version.project_id == Project.id))
        ids = list(session.scalars(_within(query, names)))
        if ids:
            with _synced_together():
                _write_project_pages(session, www_dir, ids, site)


# In a worker process of a full publish: its own connection to the database.
_worker_db: Database | None = None


def _start_worker(url: str, parent: int) -> None:
    global _worker_db  # one per worker process, made when it starts
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()
    _worker_db = Database(url)


def _exit_with(parent: int) -> None:
    """A worker whose publish was killed ends too, rather than wait for more work for ever."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


def _in_worker(work: Callable[..., _T], *args: Any) -> _T:
    assert _worker_db is not None
    return work(_worker_db, *args)


def _each_range(
    db: Database, workers: int, work: Callable[..., _T], ranges: list[_Range], *args: Any
) -> Iterator[_T]:
    """``work(db, names, *args)`` for each range, in order: here, or in ``workers`` processes
    of their own (each with its own connection) when there is more than one range."""
    if workers <= 1 or len(ranges) <= 1:
        for names in ranges:
            yield work(db, names, *args)
        return
    url = db.engine.url.render_as_string(hide_password=False)
    context = multiprocessing.get_context("spawn")
    start = (url, os.getpid())
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=start)
    try:
        yield from pool.map(functools.partial(_in_worker, work), ranges, *map(itertools.repeat, args))
    except BrokenProcessPool:
        pool.shutdown(wait=True, cancel_futures=True)
        raise PiwheelsError(
            "publish --full: a worker process ended abruptly (killed, or out of memory: fewer "
            "publish_workers need less); the pages written so far are whole and the root index is "
            "the one before: run it again"
        ) from None
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # no worker goes on writing behind the error
        raise
    pool.shutdown(wait=True)


def _publish_projects(
    session: Session, simple: Path, rows: Sequence[Any], written: _Written, withdraw_deleted: bool
) -> None:
    """Write the index pages of ``rows`` (from ``_candidates``) that have files to list; note in
    ``written`` which were written, which are to be removed, and how the root must change."""
    files = _load_files(session, [row.id for row in rows])
    pages_to_write = []
    for row in rows:
        canonical = bool(_CANONICAL.match(row.name))
        if not canonical:
            log.warning("not publishing project %r: not a canonical name", row.name)
        withdrawn = withdraw_deleted and row.deleted_at is not None
        if canonical and files.get(row.id) and not withdrawn:
            pages_to_write.append((simple / row.name, row.display_name, files[row.id]))
            written.published.add(row.name)
            want: str | None = row.display_name
        else:
            if canonical:
                written.emptied.add(row.name)
            want = None
        if want != row.listed_name and canonical:
            written.listed[row.name] = want
            written.listed_ids[row.id] = want
    texts = _load_metadata(session, _metadata_missing(pages_to_write))
    for project_dir, display_name, project_files in pages_to_write:
        _write_project(project_dir, display_name, project_files, texts)


def _site(public_url: str | None) -> dict[str, Any]:
    return {
        "name": "piwheels-ctl",
        "index_url": (public_url or DEFAULT_PUBLIC_URL).rstrip("/") + "/simple/",
        "generated": None,
    }


def _write_human_pages(
    session: Session, www_dir: Path, project_ids: list[int], *, public_url: str | None
) -> None:
    """The project pages of ``project_ids``, then the front page, the statistics and the lists
    of projects that got a new page (or are missing)."""
    site = _site(public_url)
    initials = _write_project_pages(session, www_dir, project_ids, site)
    initials |= {c for c in stats.INITIALS if not (www_dir / "project" / f"index-{c}.html").exists()}
    _write_site(session, www_dir, site, initials, prune=False)


def _write_project_pages(
    session: Session, www_dir: Path, project_ids: list[int], site: dict[str, Any]
) -> set[str]:
    """Write the pages for people of these projects; the lists of projects a new one is on."""
    new: set[str] = set()
    for chunk in _chunks(project_ids):
        for page in pages.load_pages(session, chunk):
            if _CANONICAL.match(page.name):
                if not (www_dir / "project" / page.name / "index.html").exists():
                    new.add(stats.initial(page.name))
                _write_files(www_dir, pages.render_project(page, site))
    return new


def _write_site(
    session: Session,
    www_dir: Path,
    site: dict[str, Any],
    initials: Collection[str],
    *,
    prune: bool,
) -> None:
    """The front page, statistics and the lists of projects of ``initials``; with ``prune``
    (and every list), the pages of projects without any version removed."""
    figures = stats.load_stats(session, initials=initials)
    if prune and (www_dir / "project").is_dir():
        assert set(initials) == set(stats.INITIALS), "pruning needs every list"
        (www_dir / "projects.json").unlink(missing_ok=True)  # the one list of earlier releases
        keep = {name for listed in figures.names.values() for name, _ in listed}
        for folder in (www_dir / "project").iterdir():
            if folder.is_dir() and folder.name not in keep:
                for stale in ("index.html", "json"):
                    (folder / stale).unlink(missing_ok=True)
                if not any(folder.iterdir()):
                    folder.rmdir()
    site["generated"] = figures.generated
    _write_files(www_dir, stats.render_site(figures, site))


def _write_files(www_dir: Path, files: Mapping[str, bytes]) -> None:
    for relative, data in files.items():
        path = www_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_if_changed(path, data)


def write_project_pages(session: Session, www_dir: Path, project_id: int) -> Callable[[], None]:
    """Write one project's pages and metadata files from ``session``'s view, before it commits;
    return a function that puts the previous pages back (should the commit fail).

    The recorder calls this in the step that places a new wheel, so no page ever lists a file
    the disk does not hold. The project stays dirty: ``publish`` still refreshes the root index.
    """
    row = session.execute(
        select(Project.name, Project.display_name).where(Project.id == project_id).with_for_update()
    ).one()
    if not _CANONICAL.match(row.name):
        log.warning("not publishing project %r: not a canonical name", row.name)
        return lambda: None
    project_dir = www_dir / "simple" / row.name
    files = _load_files(session, [project_id]).get(project_id, [])
    written = [(project_dir, row.display_name, files)]
    texts = _load_metadata(session, _metadata_missing(written))
    pages = [project_dir / "index.html", project_dir / "index.json"]
    before = {page: page.read_bytes() if page.exists() else None for page in pages}
    created = [project_dir / f"{f.filename}.metadata" for f in files if f.file_id in texts]
    created = [path for path in created if not path.exists()]
    _write_project(project_dir, row.display_name, files, texts, prune=False)

    def undo() -> None:
        for page, data in before.items():
            if data is None:
                page.unlink(missing_ok=True)
            else:
                _write_if_changed(page, data)
        for path in created:
            path.unlink(missing_ok=True)

    return undo


def _metadata_missing(written: list[tuple[Path, str, list[_IndexFile]]]) -> list[_IndexFile]:
    """The files whose ``.metadata`` file is absent or not the bytes the page advertises."""
    return [
        f
        for project_dir, _, project_files in written
        for f in project_files
        if _sha256_of(project_dir / f"{f.filename}.metadata") != f.metadata_sha256
    ]


def _has_files() -> Exists:
    return exists().where(Version.project_id == Project.id, File.version_id == Version.id)


def _chunks(rows: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(rows), CHUNK):
        yield rows[start : start + CHUNK]


def _load_files(session: Session, project_ids: list[int]) -> dict[int, list[_IndexFile]]:
    """Every file of these projects, in index order, without the (large) metadata text."""
    rows = session.execute(
        select(
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
        .where(Version.project_id.in_(project_ids))
    )
    result: dict[int, list[_IndexFile]] = {}
    for row in rows:
        if not _safe_filename(row.filename):
            continue
        result.setdefault(row.project_id, []).append(
            _IndexFile(
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
            )
        )
    for files in result.values():
        files.sort(key=lambda f: (_version_key(f.version), f.filename))
    return result


def _version_key(version: str) -> tuple[int, packaging.version.Version | str]:
    try:
        return (1, parse_version(version))
    except InvalidVersion:
        # Legacy version strings sort before every valid one rather than failing the run.
        return (0, version)


def _write_project(
    project_dir: Path,
    display_name: str,
    files: list[_IndexFile],
    metadata: dict[int, bytes],
    *,
    prune: bool = True,
) -> None:
    """Write a project's pages, and the ``.metadata`` files of ``metadata`` (by file id); with
    ``prune``, remove metadata files of files no longer listed."""
    project_dir.mkdir(parents=True, exist_ok=True)
    for f in files:
        if f.file_id in metadata:
            _write_if_changed(project_dir / f"{f.filename}.metadata", metadata[f.file_id])
    html = pages.templates.get_template("simple_project.html.j2").render(
        api_version=API_VERSION, display_name=display_name, files=files
    )
    _write_if_changed(project_dir / "index.json", _dumps(_project_json(project_dir.name, files)))
    _write_if_changed(project_dir / "index.html", html.encode("utf-8"))
    if not prune:
        return
    published = {f"{f.filename}.metadata" for f in files}
    for stale in project_dir.glob("*.metadata"):
        if stale.name not in published:
            stale.unlink()


def _safe_filename(filename: str) -> bool:
    if "/" in filename or "\\" in filename or filename.startswith(".") or "\0" in filename:
        log.warning("not publishing file %r: not a plain file name", filename)
        return False
    return True


def _project_json(name: str, files: list[_IndexFile]) -> dict[str, Any]:
    versions = sorted({f.version for f in files}, key=_version_key)
    return {
        "meta": {"api-version": API_VERSION},
        "name": name,
        "files": [
            {
                "filename": f.filename,
                "url": f.filename,
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


def _load_metadata(session: Session, files: list[_IndexFile]) -> dict[int, bytes]:
    """The PEP 658 metadata file contents of ``files``, by file id."""
    result: dict[int, bytes] = {}
    for chunk in _chunks(files):
        by_id = {f.file_id: f for f in chunk}
        texts = session.execute(select(File.id, File.core_metadata).where(File.id.in_(list(by_id))))
        for file_id, text in texts:
            data = text.encode("utf-8")
            if hashlib.sha256(data).hexdigest() != by_id[file_id].metadata_sha256:
                # pip rejects metadata whose hash differs from the one the index advertises.
                log.warning("stored metadata of %s does not match its sha256", by_id[file_id].filename)
            result[file_id] = data
    return result


def _sha256_of(path: Path) -> str | None:
    try:
        # Metadata files are a few kilobytes: reading one whole is cheaper than streaming it.
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def _write_root(session: Session, simple: Path, withdraw_deleted: bool) -> tuple[bool, dict[int, str | None]]:
    """Write the root index whole, streamed from the database in name order (bytewise, as
    ``rootindex`` keeps it); whether it changed, and the projects whose listing differs from
    their ``listed_name``."""
    listable: ColumnElement[bool] = _has_files()
    if withdraw_deleted:
        listable = and_(listable, Project.deleted_at.is_(None))
    order = Project.name.collate("C") if session.get_bind().dialect.name == "postgresql" else Project.name
    rows = session.execute(
        select(
            Project.id, Project.name, Project.display_name, Project.listed_name, listable.label("listable")
        )
        .where(or_(listable, Project.listed_name.is_not(None)))
        .order_by(order)
        .execution_options(yield_per=CHUNK)
    )
    listed: dict[int, str | None] = {}

    def projects() -> Iterator[tuple[str, str]]:
        for row in rows:
            want = row.display_name if row.listable and _CANONICAL.match(row.name) else None
            if want != row.listed_name:
                listed[row.id] = want
            if want is not None:
                yield row.name, want

    return rootindex.write(simple, projects(), API_VERSION), listed


def _remove_project(project_dir: Path) -> None:
    """Remove a project's pages and metadata files, leaving its wheels (the recorder's) alone."""
    if not project_dir.is_dir():
        return
    for page in [project_dir / "index.html", project_dir / "index.json"]:
        page.unlink(missing_ok=True)
    for metadata in project_dir.glob("*.metadata"):
        metadata.unlink()


def _dumps(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _write_if_changed(path: Path, data: bytes) -> bool:
    """Atomically replace ``path`` with ``data`` unless it already holds exactly that; whether it
    wrote (inside ``_synced_together``, the rename waits for the end of its block)."""
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    deferred = _deferred.get()
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            # A crash must not leave a renamed but empty page behind.
            if deferred is None:
                os.fsync(f.fileno())
        # mkstemp creates 0600 files; the web server runs as another user.
        tmp.chmod(0o644)
        if deferred is None:
            tmp.replace(path)
        else:
            deferred.append((tmp, path))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return True


# The files written in a ``_synced_together`` block, as (temporary file, its place).
_deferred: ContextVar[list[tuple[Path, Path]] | None] = ContextVar("_deferred", default=None)


@contextmanager
def _synced_together() -> Iterator[None]:
    """The files written in the block are made durable by one sync at its end, then renamed
    into place: thousands of files cost one flush, not one each (a full publish)."""
    pending: list[tuple[Path, Path]] = []
    token = _deferred.set(pending)
    try:
        yield
    except BaseException:
        for tmp, _path in pending:
            tmp.unlink(missing_ok=True)
        raise
    finally:
        _deferred.reset(token)
    os.sync()
    for done, (tmp, path) in enumerate(pending):
        try:
            tmp.replace(path)
        except BaseException:  # a rename refused (a folder in the way): the rest are not left behind
            for left, _path in pending[done:]:
                left.unlink(missing_ok=True)
            raise
