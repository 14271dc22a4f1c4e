"""Engine, sessions and schema migrations (Alembic); the only place that opens a connection."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import DatabaseOpenError

# The one import upward from db (the layout's documented exception): every session this module
# makes keeps the queue in step (queue.upkeep.track), whoever opened the database. A hook the
# queue registered when imported would be missing wherever nothing had imported the queue yet (a
# test, a benchmark, a script), and the pending pairs would silently go stale; handing it to
# every Database() would make each caller remember it.
from ..queue import upkeep

# Alembic (with Mako and Pygments) is imported only to create, upgrade or explain a schema: a
# command on a database already at SCHEMA_HEAD starts without it (docs/benchmarks.md).
if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
# How long one attempt to take SQLite's write lock waits (busy timeout), and how long a writer
# keeps trying in all before it gives up: a finished build waits out a long writer, not lost.
BUSY_TIMEOUT_MS = 30_000
LOCK_PATIENCE = 300.0
# The execution option that tells the ``begin`` hook which kind of transaction to open.
_BEGIN = "piwheels_begin"


# SQLite's primary result codes, as its C API numbers them (the sqlite3 module names them only
# from Python 3.11 on, and this runs on 3.10).
SQLITE_READONLY = 8
SQLITE_IOERR = 10
SQLITE_CORRUPT = 11
SQLITE_FULL = 13
SQLITE_CANTOPEN = 14
SQLITE_NOTADB = 26

# What to do about an SQLite error that is the file's or the disk's fault (by primary result code).
_SQLITE_ADVICE = {
    SQLITE_CORRUPT: "the file is corrupt: restore it from a backup (or try 'sqlite3 FILE .recover')",
    SQLITE_NOTADB: "not an SQLite database: restore it from a backup or check database_url",
    SQLITE_FULL: "the disk is full: free space there and run again",
    SQLITE_READONLY: "it cannot be written: make the file and its folder writable by this user",
    SQLITE_CANTOPEN: "it cannot be opened: the file and its folder must be readable and writable",
    # A full disk often shows as an I/O error: SQLite could not grow its -shm or -wal file.
    SQLITE_IOERR: "disk I/O error: check that its disk is not full (df) nor failing (dmesg)",
}


def sqlite_problem(exc: BaseException, path: str | None) -> DatabaseOpenError | None:
    """One line naming the database file for an SQLite error the user must act on, or None."""
    code = getattr(exc, "sqlite_errorcode", None)
    advice = _SQLITE_ADVICE.get(code & 0xFF) if isinstance(code, int) else None
    if advice is None:
        return None
    return DatabaseOpenError(f"database {path}: {exc}; {advice}")


def _sqlite_handle_error(context: ExceptionContext) -> None:
    url = context.engine.url if context.engine is not None else None
    problem = sqlite_problem(context.original_exception, url.database if url else None)
    if problem is not None:
        raise problem from None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite would BEGIN by itself, deferred and only before a write, so a transaction that
    # read first could not take the write lock later; _sqlite_begin emits BEGIN instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    """Open a transaction: IMMEDIATE (the write lock up front) unless the session only reads.

    A deferred transaction that has read and then writes fails at once ("database is locked")
    when another connection wrote meanwhile; one that holds the write lock from its BEGIN
    cannot. Each attempt waits the busy timeout; the attempts go on for LOCK_PATIENCE.
    """
    mode = conn.get_execution_options().get(_BEGIN, "IMMEDIATE")
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    deadline = time.monotonic() + LOCK_PATIENCE
    try:
        while True:
            try:
                cursor.execute(f"BEGIN {mode}")
                return
            except sqlite3.Error as exc:
                problem = sqlite_problem(exc, conn.engine.url.database)
                if problem is not None:
                    raise problem from None
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise DatabaseOpenError(
                        f"database {conn.engine.url.database}: {exc}; another process holds its "
                        f"write lock for more than {LOCK_PATIENCE:.0f} s (a long 'sync' or 'audit'?)"
                    ) from None
                log.warning("database %s is locked; still waiting", conn.engine.url.database)
    finally:
        cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys, a busy timeout and BEGIN IMMEDIATE."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    try:
        engine = create_engine(url, future=True)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise DatabaseOpenError(f"database URL {url!r}: {exc}") from None
    if engine.dialect.name == "sqlite":
        if engine.url.database and engine.url.database != ":memory:":
            Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        event.listen(engine, "handle_error", _sqlite_handle_error)
    return engine


# This code's newest schema revision, known without loading every migration script
# (tests/test_migrations.py checks it against their head).
SCHEMA_HEAD = "0012"


def alembic_config(engine: Engine) -> AlembicConfig:
    """Alembic settings for running this package's migrations on ``engine``."""
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def schema_state(engine: Engine) -> tuple[str | None, str]:
    """The database's schema revision (None when empty) and this code's newest revision."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    assert head is not None
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    except OperationalError as exc:
        raise DatabaseOpenError(f"cannot open database {engine.url!r}: {exc.orig}") from None
    return current, head


def _check_known(engine: Engine, current: str | None) -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(engine))
    if current is not None and current not in {rev.revision for rev in script.walk_revisions()}:
        raise DatabaseOpenError(
            f"the database schema ({current}) is newer than this piwheels-ctl knows; upgrade piwheels-ctl"
        )


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Create or upgrade the schema to this code's head; refuse a schema from newer code."""
    current, head = schema_state(engine)
    _check_known(engine, current)
    if current != head:
        from alembic import command

        command.upgrade(alembic_config(engine), "head")
    return current, head


def _at_head(engine: Engine) -> bool:
    """Whether Alembic's own table says the database is at SCHEMA_HEAD; False whenever in doubt
    (no such table, no database, any error), and then Alembic itself is asked."""
    try:
        with engine.connect() as conn:
            revisions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    except SQLAlchemyError:
        return False
    return revisions == [SCHEMA_HEAD]


def check_schema(engine: Engine) -> None:
    """Refuse to work on a database that ``init`` has not brought to this code's schema."""
    if _at_head(engine):
        return
    current, head = schema_state(engine)
    _check_known(engine, current)
    if current is None:
        raise DatabaseOpenError(f"database {engine.url!r} is not initialised: run 'piwheels-ctl init'")
    if current != head:
        raise DatabaseOpenError(
            f"database schema {current} is older than this piwheels-ctl ({head}): "
            "run 'piwheels-ctl init' to upgrade"
        )


class Database:
    """An engine plus session factories; ``session()`` and ``reader()`` are one transaction each."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        upkeep.track(self._sessions)
        if self.engine.dialect.name == "postgresql":
            # One snapshot for the whole read, and no writes by mistake.
            reading = self.engine.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
        else:
            reading = self.engine.execution_options(**{_BEGIN: "DEFERRED"})
        self._readers = sessionmaker(reading, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose work commits at the end of the block, or rolls back on error.

        On SQLite it holds the write lock from its start: keep it short.
        """
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def reader(self) -> Iterator[Session]:
        """A read-only session on one snapshot of the database that never blocks a writer."""
        with self._readers() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
