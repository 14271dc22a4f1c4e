"""An upgrade from the first schema while the models carry a column that only a later revision
adds: what a historic migration that read today's models would trip on.

Run as ``python later_schema.py DATABASE_URL LATER_DIR`` (its own process: the column is mapped
onto the live models, which no other test may see). LATER_DIR gets a throwaway revision after
the newest that adds the column to abis, versions and projects. Prints as JSON the rows the
first revision was given and the queue and counts the migrations made, then those today's code
computes from the same rows.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from alembic import command
from sqlalchemy import Connection, DateTime, String, bindparam, select, text
from sqlalchemy.orm import mapped_column

from piwheels_ctl.db import counts
from piwheels_ctl.db.engine import MIGRATIONS, SCHEMA_HEAD, Database, alembic_config
from piwheels_ctl.db.models import Abi, PendingPair, Project, Version
from piwheels_ctl.queue import upkeep

COLUMN = "later_note"
TABLES = ("abis", "versions", "projects")
LATER = f'''"""A column added after every real revision (a test's throwaway)."""

import sqlalchemy as sa
from alembic import op

revision = "later"
down_revision = "{SCHEMA_HEAD}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in {TABLES!r}:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("{COLUMN}", sa.String(32), nullable=True))


def downgrade() -> None:
    for table in {TABLES!r}:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("{COLUMN}")
'''

RELEASED = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
# At revision 0001: three ABIs (one inactive), a watched project, an unwatched one with one
# version asked for, a skipped one; builds, wheels and a coverage that each keep a pair out.
FIRST_ROWS = (
    "INSERT INTO abis (id, tag, python_tag, abi_tag, platform_tag, active) VALUES"
    " (1, 'cp311-cp311-linux_armv7l', 'cp311', 'cp311', 'linux_armv7l', true),"
    " (2, 'cp312-cp312-linux_armv7l', 'cp312', 'cp312', 'linux_armv7l', true),"
    " (3, 'cp39-cp39-linux_armv7l', 'cp39', 'cp39', 'linux_armv7l', false)",
    "INSERT INTO projects (id, name, display_name, watched, dirty, skip_reason) VALUES"
    " (1, 'a', 'A', true, false, NULL), (2, 'b', 'b', false, false, NULL),"
    " (3, 'c', 'c', true, false, 'broken')",
    "INSERT INTO versions (id, project_id, version, yanked, priority, sdist_url, requires_python,"
    " release_time) VALUES"
    " (1, 1, '1.0', false, 0, NULL, NULL, NULL),"  # no sdist (and built)
    " (2, 1, '2.0', false, 0, 'http://x/a-2.0.tar.gz', NULL, :released),"
    " (3, 1, '3.0', false, 0, 'http://x/a-3.0.tar.gz', '>=3.12', NULL),"
    " (4, 1, '4.0', true, 0, 'http://x/a-4.0.tar.gz', NULL, NULL),"  # yanked
    " (5, 2, '1.0', false, 5, 'http://x/b-1.0.tar.gz', NULL, NULL),"  # asked for
    " (6, 2, '0.9', false, 0, 'http://x/b-0.9.tar.gz', NULL, NULL),"  # neither watched nor asked
    " (7, 3, '1.0', false, 0, 'http://x/c-1.0.tar.gz', NULL, NULL),"  # its project skipped
    " (8, 1, '5.0', false, 0, 'http://x/a-5.0.tar.gz', 'not a specifier', NULL),"
    " (9, 1, '6.0', false, 0, 'http://x/a-6.0.tar.gz', '>=3.8', NULL)",
    "INSERT INTO builds (id, version_id, abi_id, status, failure_reason, started_at) VALUES"
    " (1, 1, 1, 'success', NULL, :released), (2, 9, 1, 'failed', 'missing-header', :released),"
    " (3, 2, 2, 'building', NULL, :released)",
    "INSERT INTO files (id, filename, version_id, build_id, size, sha256, python_tag, abi_tag,"
    " platform_tag, metadata_sha256, core_metadata, uploaded_at) VALUES"
    " (1, 'a-1.0-cp311-cp311-linux_armv7l.whl', 1, 1, 1000, 'f1', 'cp311', 'cp311', 'linux_armv7l',"
    " 'm1', '', :released),"
    " (2, 'a-5.0-cp312-cp312-linux_armv7l.whl', 8, NULL, 2000, 'f2', 'cp312', 'cp312', 'linux_armv7l',"
    " 'm2', '', :released)",
    "INSERT INTO coverage (version_id, abi_id, file_id) VALUES (1, 1, 1), (8, 2, 2)",
)
# What is read back: the first revision's columns of every row it was given.
KEPT = {
    "abis": "SELECT id, tag, python_tag, active FROM abis ORDER BY id",
    "projects": "SELECT id, name, display_name, watched, skip_reason FROM projects ORDER BY id",
    "versions": "SELECT id, project_id, version, yanked, priority, sdist_url, requires_python"
    " FROM versions ORDER BY id",
    "builds": "SELECT id, version_id, abi_id, status, failure_reason FROM builds ORDER BY id",
    "files": "SELECT id, filename, version_id, build_id, size FROM files ORDER BY id",
    "coverage": "SELECT version_id, abi_id, file_id FROM coverage ORDER BY version_id, abi_id",
}


def _queue(database: Database) -> list[list[Any]]:
    """The pending pairs, read through the models (the sort time as a UTC datetime)."""
    query = select(PendingPair.version_id, PendingPair.abi_id, PendingPair.priority, PendingPair.sort_time)
    with database.reader() as session:
        rows = session.execute(query.order_by(PendingPair.version_id, PendingPair.abi_id)).all()
    return [[v, a, p, t.isoformat()] for v, a, p, t in rows]


def _counts(conn: Connection) -> dict[str, int]:
    return {name: int(value) for name, value in conn.execute(text("SELECT name, value FROM counts")) if value}


def main(url: str, later: Path) -> dict[str, Any]:
    (later / "later_column.py").write_text(LATER)
    for model in (Abi, Version, Project):
        setattr(model, COLUMN, mapped_column(String(32), nullable=True))
    database = Database(url)
    config = alembic_config(database.engine)
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", os.pathsep.join([str(MIGRATIONS / "versions"), str(later)]))
    try:
        command.upgrade(config, "0001")
        with database.engine.begin() as conn:
            for statement in FIRST_ROWS:
                released = bindparam("released", RELEASED, type_=DateTime(timezone=True))
                conn.execute(
                    text(statement).bindparams(released) if ":released" in statement else text(statement)
                )
        command.upgrade(config, "head")
        with database.engine.connect() as conn:
            result: dict[str, Any] = {
                "revision": conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one(),
                "kept": {
                    table: [list(row) for row in conn.execute(text(query))] for table, query in KEPT.items()
                },
                "counts": _counts(conn),
            }
        result["queue"] = _queue(database)
        # Today's code, on the same rows (the later column mapped): what the migrations must match.
        with database.session() as session:
            assert session.scalars(select(getattr(Abi, COLUMN))).all() == [None, None, None]
            upkeep.refresh_all(session)
        with database.engine.begin() as conn:
            counts.fill(conn)
            result["counts_today"] = _counts(conn)
        result["queue_today"] = _queue(database)
        return result
    finally:
        database.dispose()


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], Path(sys.argv[2]))))
