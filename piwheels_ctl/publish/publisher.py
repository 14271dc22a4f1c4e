"""Publishing from the database: the pages of dirty projects (the simple index, the pages for
people), the root index patched where its list changed, and the flags of what was published cleared.

The one module that writes the site (``simple`` renders and writes the index files, ``pages``
and ``stats`` render the rest); a full publish of every project is ``full``'s.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Select, bindparam, select, update
from sqlalchemy.orm import Session

from ..db.batches import in_batches
from ..db.engine import Database
from ..db.models import Project
from ..files import write_if_changed
from ..queue import releases
from . import pages, releaseindex, rootindex, simple, stats

log = logging.getLogger(__name__)


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


@dataclass
class Written:
    """What publishing some projects' index pages did."""

    published: set[str] = field(default_factory=set)  # names whose pages were written
    emptied: set[str] = field(default_factory=set)  # names whose pages are to go
    listed: dict[str, str | None] = field(default_factory=dict)  # root changes, by name
    listed_ids: dict[int, str | None] = field(default_factory=dict)  # the same, by project id
    # Release -> name -> what its root is to list (None: nothing), for each project written.
    release_lines: releaseindex.Lines = field(default_factory=dict)


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
    every project, a batch at a time, each batch in short transactions of its own, ``workers``
    batches at once."""
    if full:
        # Here, not at the top: ``full`` is built from this module's pieces.
        from .full import publish_full

        return publish_full(
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
    for batch in in_batches(published.items()):
        session.execute(clear, [{"project": p, "generation": g} for p, g in batch])
    record = update(table).where(table.c.id == bindparam("project")).values(listed_name=bindparam("listed"))
    for names in in_batches((listed or {}).items()):
        session.execute(record, [{"project": p, "listed": n} for p, n in names])


def candidates() -> Select[Any]:
    """The columns of a project that ``publish_projects`` decides on."""
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
    index = www_dir / "simple"
    projects = session.execute(candidates().where(Project.dirty).order_by(Project.name)).all()
    written = Written()
    names = releases.farm_releases(session)
    new = [r for r in names if not (releaseindex.release_index(www_dir, r) / rootindex.JSON).exists()]
    for batch in in_batches(projects):
        publish_projects(session, index, batch, written, withdraw_deleted)
        lines = releaseindex.write_pages(
            session, www_dir, batch, withdraw_deleted, [r for r in names if r not in new]
        )
        for release, wanted in lines.items():
            written.release_lines.setdefault(release, {}).update(wanted)
    # New pages exist before the root links to them; gone ones vanish after it stops.
    listed = written.listed_ids
    root_written = False
    patched = rootindex.patch(index, written.listed, simple.API_VERSION) if written.listed else False
    if patched is None or not (index / rootindex.HTML).exists() or not (index / rootindex.JSON).exists():
        root_written, listed = simple.write_root(session, index, withdraw_deleted)
    else:
        root_written = patched
    for name in sorted(written.emptied):
        simple.remove_project(index / name)
    releaseindex.finish_roots(session, www_dir, written.release_lines, withdraw_deleted)
    for release in new:  # a release the farm just got builders for: its whole index
        releaseindex.write_all(session, www_dir, release, withdraw_deleted)
    _write_human_pages(session, www_dir, [row.id for row in projects], public_url=public_url)
    generations = {row.id: row.dirty_generation for row in projects}
    return PublishResult(
        projects_written=len(projects), root_written=root_written, published=generations, listed=listed
    )


def publish_projects(
    session: Session, index: Path, rows: Sequence[Any], written: Written, withdraw_deleted: bool
) -> None:
    """Write the index pages of ``rows`` (from ``candidates``) that have files to list; note in
    ``written`` which were written, which are to be removed, and how the root must change."""
    files = simple.load_files(session, [row.id for row in rows])
    listings: list[simple.Listing] = []
    for row in rows:
        canonical = bool(simple.CANONICAL.match(row.name))
        if not canonical:
            log.warning("not publishing project %r: not a canonical name", row.name)
        withdrawn = withdraw_deleted and row.deleted_at is not None
        if canonical and files.get(row.id) and not withdrawn:
            listings.append((index / row.name, row.display_name, files[row.id]))
            written.published.add(row.name)
            want: str | None = row.display_name
        else:
            if canonical:
                written.emptied.add(row.name)
            want = None
        if want != row.listed_name and canonical:
            written.listed[row.name] = want
            written.listed_ids[row.id] = want
    simple.write_projects(session, listings)


def site_context(public_url: str | None) -> dict[str, Any]:
    """What every page for people is told about the site."""
    return {
        "name": "piwheels-ctl",
        "index_url": (public_url or DEFAULT_PUBLIC_URL).rstrip("/") + "/simple/",
        # Without public_url, a page's own script puts the address it was reached at instead.
        "index_url_guessed": not public_url,
        "base_url": (public_url or DEFAULT_PUBLIC_URL).rstrip("/") + "/",  # a release's: + <release>/simple/
        "generated": None,
    }


def _write_human_pages(
    session: Session, www_dir: Path, project_ids: list[int], *, public_url: str | None
) -> None:
    """The project pages of ``project_ids``, then the front page, the statistics and the lists
    of projects that got a new page (or are missing)."""
    site = site_context(public_url)
    initials = write_people_pages(session, www_dir, project_ids, site)
    initials |= {c for c in stats.INITIALS if not (www_dir / "project" / f"index-{c}.html").exists()}
    write_site(session, www_dir, site, initials, prune=False)


def write_people_pages(
    session: Session, www_dir: Path, project_ids: list[int], site: dict[str, Any]
) -> set[str]:
    """Write the pages for people of these projects; the lists of projects a new one is on."""
    new: set[str] = set()
    for batch in in_batches(project_ids):
        for page in pages.load_pages(session, batch):
            if simple.CANONICAL.match(page.name):
                if not (www_dir / "project" / page.name / "index.html").exists():
                    new.add(stats.initial(page.name))
                _write_files(www_dir, pages.render_project(page, site))
    return new


def write_site(
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
    site["releases"] = releases.farm_releases(session)  # the front page's index of each
    _write_files(www_dir, stats.render_site(figures, site))


def _write_files(www_dir: Path, files: Mapping[str, bytes]) -> None:
    for relative, data in files.items():
        path = www_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        write_if_changed(path, data)


def write_project_pages(session: Session, www_dir: Path, project_id: int) -> Callable[[], None]:
    """Write one project's pages and metadata files from ``session``'s view, before it commits;
    return a function that puts the previous pages back (should the commit fail).

    The recorder calls this in the step that places a new wheel, so no page ever lists a file
    the disk does not hold. The project stays dirty: ``publish`` still refreshes the root index.
    """
    row = session.execute(
        select(Project.name, Project.display_name).where(Project.id == project_id).with_for_update()
    ).one()
    if not simple.CANONICAL.match(row.name):
        log.warning("not publishing project %r: not a canonical name", row.name)
        return lambda: None
    project_dir = www_dir / "simple" / row.name
    files = simple.load_files(session, [project_id]).get(project_id, [])
    texts = simple.load_metadata(session, simple.metadata_missing([(project_dir, row.display_name, files)]))
    index_pages = [project_dir / "index.html", project_dir / "index.json"]
    before = {page: page.read_bytes() if page.exists() else None for page in index_pages}
    created = [project_dir / f"{f.filename}.metadata" for f in files if f.file_id in texts]
    created = [path for path in created if not path.exists()]
    simple.write_project(project_dir, row.display_name, files, texts, prune=False)

    def undo() -> None:
        for page, data in before.items():
            if data is None:
                page.unlink(missing_ok=True)
            else:
                write_if_changed(page, data)
        for path in created:
            path.unlink(missing_ok=True)

    return undo
