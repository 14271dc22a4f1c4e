"""The index of each OS release, ``www/<release>/simple/``: the pages ``simple`` renders, of the
files that release lists (``queue.releases.listed_in``), linked to where the wheels and their
metadata files lie, once, in ``www/simple/<project>/``; its root patched like the main one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, and_, select
from sqlalchemy.orm import Session

from ..db.batches import BATCH, in_batches
from ..db.models import Project
from ..queue import releases
from . import rootindex, simple

# Release -> canonical name -> what its root should list it as (None: not listed).
Lines = dict[str, dict[str, str | None]]


def release_index(www_dir: Path, release: str) -> Path:
    """Where ``release``'s simple index lies."""
    if not releases.RELEASE_NAME.match(release) or release in releases.RESERVED:
        raise ValueError(f"{release!r} is not a release name")
    return www_dir / release / "simple"


def write_pages(
    session: Session, www_dir: Path, rows: Sequence[Any], withdraw_deleted: bool, names: list[str]
) -> Lines:
    """Write the pages of ``rows`` (``publisher.candidates``) in each release's index of
    ``names``; what each release's root is to list of them."""
    lines: Lines = {}
    for release in names:
        index = release_index(www_dir, release)
        files = simple.load_files(session, [row.id for row in rows], release)
        listings: list[simple.Listing] = []
        wanted = lines.setdefault(release, {})
        for row in rows:
            if not simple.CANONICAL.match(row.name):
                continue
            if files.get(row.id) and not (withdraw_deleted and row.deleted_at is not None):
                listings.append((index / row.name, row.display_name, files[row.id]))
                wanted[row.name] = row.display_name
            else:
                wanted[row.name] = None
        simple.write_projects(session, listings, metadata=False)
    return lines


def finish_roots(session: Session, www_dir: Path, lines: Lines, withdraw_deleted: bool) -> None:
    """Patch each release's root with ``lines`` (written whole where it is missing), then
    remove the pages of the projects it does not list any more."""
    for release, wanted in sorted(lines.items()):
        index = release_index(www_dir, release)
        patched = rootindex.patch(index, wanted, simple.API_VERSION) if wanted else False
        if patched is None or not all((index / f).exists() for f in (rootindex.HTML, rootindex.JSON)):
            write_root(session, index, release, withdraw_deleted)
        for name in sorted(n for n, want in wanted.items() if want is None):
            remove_pages(index / name)


def write_root(session: Session, index: Path, release: str, withdraw_deleted: bool) -> bool:
    """Write ``release``'s root whole: the projects with a file it lists, in name order."""
    listable: ColumnElement[bool] = simple.has_files()
    if withdraw_deleted:
        listable = and_(listable, Project.deleted_at.is_(None))
    order = Project.name.collate("C") if session.get_bind().dialect.name == "postgresql" else Project.name
    query = select(Project.id, Project.name, Project.display_name).where(listable).order_by(order)

    def projects() -> Iterator[tuple[str, str]]:
        rows = session.execute(query.execution_options(yield_per=BATCH))
        for chunk in in_batches(rows):
            files = simple.load_files(session, [row.id for row in chunk], release)
            for row in chunk:
                if files.get(row.id) and simple.CANONICAL.match(row.name):
                    yield row.name, row.display_name

    return rootindex.write(index, projects(), simple.API_VERSION)


def write_all(session: Session, www_dir: Path, release: str, withdraw_deleted: bool) -> None:
    """Write ``release``'s whole index: the pages of every project with a file, then its root."""
    query = select(Project.id, Project.name, Project.display_name, Project.deleted_at)
    rows = session.execute(query.where(simple.has_files()).order_by(Project.name)).all()
    listed: set[str] = set()
    for batch in in_batches(rows):
        lines = write_pages(session, www_dir, batch, withdraw_deleted, [release])
        listed |= {name for name, want in lines[release].items() if want is not None}
    write_root(session, release_index(www_dir, release), release, withdraw_deleted)
    prune(www_dir, release, listed)


def remove_pages(project_dir: Path) -> None:
    """A project's pages in a release's index, and its folder (which holds nothing else)."""
    simple.remove_project(project_dir)
    if project_dir.is_dir() and not any(project_dir.iterdir()):
        project_dir.rmdir()


def prune(www_dir: Path, release: str, listed: set[str]) -> None:
    """Remove the pages of a release's index that are not in ``listed`` (a full publish)."""
    index = release_index(www_dir, release)
    if index.is_dir():
        for folder in sorted(d for d in index.iterdir() if d.is_dir() and d.name not in listed):
            remove_pages(folder)
