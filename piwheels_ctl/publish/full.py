"""A full publish: every project's pages, a range of names at a time, in worker processes of
their own (each with its own connection to the database) when asked for more than one.
"""

from __future__ import annotations

import functools
import itertools
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Select, exists, or_, select

from ..db import batches
from ..db.engine import Database
from ..db.models import Project, Version
from ..errors import PiwheelsError
from ..files import synced_together
from ..queue import releases
from . import publisher, releaseindex, simple, stats

# A range of a full publish: the projects whose names are after the first (None: from the
# start) and up to the second (None: to the end).
_Range = tuple[str | None, str | None]
_T = TypeVar("_T")


def publish_full(
    db: Database, www_dir: Path, *, public_url: str | None, withdraw_deleted: bool, workers: int
) -> publisher.PublishResult:
    """Every project's pages, a batch of projects (by name) at a time, each batch read in a
    snapshot of its own by one of ``workers`` processes and its flags cleared right after; then
    the root index, written whole as it streams from the database, the pages it does not list
    removed, and every page for people, again by batches. Memory: the names, and a batch per
    worker.

    Builds are recorded meanwhile, each writing its project's pages before it commits: the root,
    read later than the batches, may list a project whose batch had no wheel of it. Its page is
    then there (or the root's snapshot writes it), and stays: what goes is decided by the root.
    """
    index = www_dir / "simple"
    shown: dict[str, bool] = {}  # name -> the root lists it; False: pages written, not listed (yet)
    count = 0
    ranges = _name_ranges(db)
    for generations, range_written in _each_range(db, workers, _index_pages, ranges, index, withdraw_deleted):
        with db.session() as session:
            publisher.clear_published(session, generations)
        count += len(generations)
        shown.update(dict.fromkeys(range_written.published, False))
    with db.reader() as session:
        root_written, listed = simple.write_root(session, index, withdraw_deleted, shown)
    with db.session() as session:
        publisher.clear_published(session, {}, listed)
    # The pages the root does not list: of projects without a wheel (or withdrawn), and of
    # projects the database does not hold any more at all.
    if index.is_dir():
        for name in sorted(d.name for d in index.iterdir() if d.is_dir() and not shown.get(d.name)):
            simple.remove_project(index / name)
    with db.reader() as session:
        for release in releases.farm_releases(session):
            releaseindex.write_all(session, www_dir, release, withdraw_deleted)
    site = publisher.site_context(public_url)
    for _ in _each_range(db, workers, _people_pages, ranges, www_dir, site):
        pass
    with db.reader() as session:
        publisher.write_site(session, www_dir, site, stats.INITIALS, prune=True)
    return publisher.PublishResult(projects_written=count, root_written=root_written)


def _name_ranges(db: Database) -> list[_Range]:
    """The projects' names cut into ranges of ``batches.BATCH`` projects: the ids of a range
    are one bounded ``IN (...)`` list."""
    size = batches.BATCH  # read now, not at import: a test makes the ranges small
    with db.reader() as session:
        names = session.scalars(select(Project.name).order_by(Project.name)).all()
    return list(itertools.pairwise([None, *names[size - 1 :: size], None]))


def _within(query: Select[Any], names: _Range) -> Select[Any]:
    after, upto = names
    if after is not None:
        query = query.where(Project.name > after)
    if upto is not None:
        query = query.where(Project.name <= upto)
    return query.order_by(Project.name)


def _index_pages(
    db: Database, names: _Range, index: Path, withdraw_deleted: bool
) -> tuple[dict[int, int], publisher.Written]:
    """The index pages of a range's projects (those with files, or dirty); the generations
    published, and what was written."""
    written = publisher.Written()
    with db.reader() as session:
        query = publisher.candidates().where(or_(Project.dirty, simple.has_files()))
        rows = session.execute(_within(query, names)).all()
        if rows:
            with synced_together():
                publisher.publish_projects(session, index, rows, written, withdraw_deleted)
    return {row.id: row.dirty_generation for row in rows}, written


def _people_pages(db: Database, names: _Range, www_dir: Path, site: dict[str, Any]) -> None:
    """The pages for people of a range's projects that have a version."""
    with db.reader() as session:
        query = select(Project.id).where(exists().where(Version.project_id == Project.id))
        ids = list(session.scalars(_within(query, names)))
        if ids:
            with synced_together():
                publisher.write_people_pages(session, www_dir, ids, site)


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
