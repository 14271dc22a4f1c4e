"""Engine, sessions and schema migrations (Alembic); the only place that opens a connection."""

from __future__ import annotations

import itertools
import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import DatabaseDamagedError, DatabaseOpenError

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

# Where the backups are, and how to make and restore one (docs/farm.md, "Backups").
SQLITE_RESTORE = (
    "restore it from a backup (docs/farm.md, 'Backups': sqlite3 FILE \".backup COPY\" makes one; "
    "copy it over FILE, with FILE-wal and FILE-shm deleted) or salvage it with 'sqlite3 FILE .recover', "
    "then run 'piwheels-ctl audit --fix'"
)
POSTGRESQL_RESTORE = (
    "restore the newest dump (docs/farm.md, 'Backups': 'systemctl start piwheels-backup.service' "
    "makes one, pg_restore restores it), then run 'piwheels-ctl audit --fix'"
)

# What to do about an SQLite error that is the file's or the disk's fault (by primary result code).
_SQLITE_ADVICE = {
    SQLITE_CORRUPT: f"the file is damaged: {SQLITE_RESTORE}",
    SQLITE_NOTADB: f"not an SQLite database: check database_url, or {SQLITE_RESTORE}",
    SQLITE_FULL: "the disk is full: free space there and run again",
    SQLITE_READONLY: "it cannot be written: make the file and its folder writable by this user",
    SQLITE_CANTOPEN: "it cannot be opened: the file and its folder must be readable and writable",
    # A full disk often shows as an I/O error: SQLite could not grow its -shm or -wal file.
    SQLITE_IOERR: "disk I/O error: check that its disk is not full (df) nor failing (dmesg)",
}


def sqlite_problem(exc: BaseException, path: str | None) -> DatabaseOpenError | None:
    """One line naming the database file for an SQLite error the user must act on, or None."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    advice = _SQLITE_ADVICE.get(primary) if primary is not None else None
    if advice is None:
        return None
    error = DatabaseDamagedError if primary in (SQLITE_CORRUPT, SQLITE_NOTADB) else DatabaseOpenError
    return error(f"database {path}: {exc}; {advice.replace('FILE', path or 'FILE')}")


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
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    _sqlite_wal(cursor)
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_wal(cursor: sqlite3.Cursor) -> None:
    """Switch to WAL, retrying while other connections hold the file: on a fresh database,
    connections opening it together each hold a shared lock while one wants the exclusive lock
    the switch needs, and SQLite answers "database is locked" at once rather than wait for a
    deadlock (controllers started together, tests/test_first_start.py)."""
    deadline = time.monotonic() + LOCK_PATIENCE
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


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
SCHEMA_HEAD = "0016"


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


# The check a command makes at its start (`init`, `run`, `publish`) reads a whole SQLite file
# with quick_check only up to this size: about 0.03 s at 16 MiB, where 300 MB (50,000 projects)
# take 0.5 s and 3 GB (500,000) 14 s, a minute from a cold cache (docs/benchmarks.md). A larger
# file gets the bounded check, a few milliseconds whatever its size: EDGE_ROWS rows at each end
# of every table, read through its B-tree from the root (where a torn or overwritten root page
# shows). `audit` always runs quick_check whole.
START_CHECK_FULL_MB = 16
EDGE_ROWS = 64


def check_integrity(engine: Engine, *, full: bool) -> str:
    """What was checked, in a few words, when the database is intact.

    Damaged, a DatabaseDamagedError that says what was found and how to restore from the backup.
    ``full`` checks all the database can (``audit``); otherwise the check is bounded (a start).
    """
    sqlite = engine.dialect.name == "sqlite"
    where = engine.url.database if sqlite else engine.url.render_as_string()
    # A file SQLite cannot open as a database at all fails here already, with the same advice.
    try:
        with engine.connect() as conn:
            damage, checked = (_sqlite_damage if sqlite else _postgresql_damage)(conn, full)
    except DBAPIError as exc:
        if not getattr(exc.orig, "sqlstate", "").startswith("XX"):  # XX001, XX002: data, index corrupted
            raise
        damage, checked = [" ".join(str(exc.orig).split())], "reading it"
    # quick_check gives a row per fault, the B-tree's faults in one row of lines after a header.
    lines = [line.strip() for row in damage for line in row.splitlines() if not line.startswith("*** ")]
    if not lines:
        return checked
    found = "; ".join(line for line in lines[:3] if line)
    more = f"; {len(lines) - 3} more" if len(lines) > 3 else ""
    restore = SQLITE_RESTORE.replace("FILE", where or "FILE") if sqlite else POSTGRESQL_RESTORE
    raise DatabaseDamagedError(
        f"database {where} is damaged ({checked}: {found}{more}): "
        f"stopped before moving or deleting anything; {restore}"
    )


def _sqlite_damage(conn: Connection, full: bool) -> tuple[list[str], str]:
    """quick_check's findings (or the bounded check's, on a large file at a start), and its name."""
    path = conn.engine.url.database
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    checked = "PRAGMA quick_check"
    try:
        pages = cursor.execute("PRAGMA page_count").fetchone()[0]
        size = pages * cursor.execute("PRAGMA page_size").fetchone()[0]
        if full or size <= START_CHECK_FULL_MB << 20:
            found = [row[0] for row in cursor.execute("PRAGMA quick_check")]
            return ([] if found == ["ok"] else found), checked
        checked = f"each table's first and last {EDGE_ROWS} rows"
        return _sqlite_edges(cursor), checked
    except sqlite3.Error as exc:  # this cursor is the driver's own: SQLAlchemy's hook does not see it
        problem = sqlite_problem(exc, path)
        if isinstance(problem, DatabaseDamagedError):  # a page SQLite refuses to read
            return [str(exc)], checked
        raise problem or DatabaseOpenError(f"database {path}: {exc}") from None
    finally:
        cursor.close()


def _sqlite_edges(cursor: sqlite3.Cursor) -> list[str]:
    """What is wrong at either end of each table: rowids out of order, NULLs where none may be."""
    damage = []
    tables = [row[0] for row in cursor.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for table in tables:
        quoted = '"' + table.replace('"', '""') + '"'
        required = [row[1] for row in cursor.execute(f"PRAGMA table_info({quoted})") if row[3]]
        nulls = " + ".join('("' + name.replace('"', '""') + '" IS NULL)' for name in required) or "0"
        for order in ("ASC", "DESC"):
            query = f"SELECT rowid, {nulls} FROM {quoted} ORDER BY rowid {order} LIMIT {EDGE_ROWS}"  # noqa: S608 (the schema's own names, quoted)
            try:
                rows = cursor.execute(query).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such column: rowid" in str(exc):  # a WITHOUT ROWID table: quick_check's alone
                    break
                raise
            ids = [row[0] for row in (rows if order == "ASC" else reversed(rows))]
            if any(a >= b for a, b in itertools.pairwise(ids)):
                damage.append(f"{table}: rowids out of order at its {'start' if order == 'ASC' else 'end'}")
            if any(row[1] for row in rows):
                damage.append(f"{table}: NULL in a NOT NULL column")
    return damage


def _postgresql_damage(conn: Connection, full: bool) -> tuple[list[str], str]:
    """The catalogs answer, no data checksum failure is recorded, every table gives its first row;
    with ``full`` and amcheck in the database, every B-tree index and table is verified."""
    damage = []
    conn.execute(text("SELECT count(*) FROM pg_catalog.pg_class")).scalar_one()
    failures = conn.execute(
        text("SELECT checksum_failures FROM pg_stat_database WHERE datname = current_database()")
    ).scalar()
    if failures:
        damage.append(f"{failures} data checksum failure(s) recorded (pg_stat_database)")
    tables = conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"))
    quote = conn.dialect.identifier_preparer.quote
    for table in tables.scalars().all():
        conn.execute(text(f"SELECT * FROM {quote(table)} LIMIT 1")).all()  # noqa: S608 (the schema's own names, quoted)
    checked = "the catalogs, checksum failures and each table's first row"
    if not full:
        return damage, checked
    if conn.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'amcheck'")).scalar() is None:
        return damage, checked + " (amcheck is not installed: CREATE EXTENSION amcheck lets audit check more)"
    # bt_index_check raises (XX002) at the first fault; verify_heapam (PostgreSQL 14) lists them.
    indexes = conn.execute(
        text(
            "SELECT c.relname, bt_index_check(c.oid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'btree' AND i.indisvalid AND i.indisready"
            " AND c.relnamespace = current_schema()::regnamespace"
        )
    ).all()
    checked += f"; amcheck: {len(indexes)} B-tree index(es)"
    if conn.execute(text("SELECT 1 FROM pg_proc WHERE proname = 'verify_heapam'")).scalar() is not None:
        heap = conn.execute(
            text(
                "SELECT c.relname, v.blkno, v.msg FROM pg_class c, verify_heapam(c.oid) v"
                " WHERE c.relkind = 'r' AND c.relnamespace = current_schema()::regnamespace"
            )
        ).all()
        damage += [f"{name} block {block}: {msg}" for name, block, msg in heap]
        checked += " and every table's pages"
    return damage, checked


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
