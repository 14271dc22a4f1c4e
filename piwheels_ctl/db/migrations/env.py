"""Alembic environment: runs migrations on the engine piwheels-ctl hands over."""

from alembic import context
from sqlalchemy import text

from piwheels_ctl.db.models import Base

# The advisory lock key that migrations hold on PostgreSQL (any number no other code uses).
MIGRATION_LOCK = 0x7069_7768  # "piwh"

engine = context.config.attributes["engine"]
with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    # SQLite's batch mode changes a table by copying it and dropping the old one; with foreign
    # keys enforced, that drop cascades to the rows that point at it (0002's copy of builds
    # emptied every files.build_id, 0006's copy of files deleted every coverage row). So they are
    # off while the migrations run (the pragma only works outside a transaction, hence on the
    # driver's connection, before the first statement begins one) and checked before the commit.
    driver = connection.connection.driver_connection if sqlite else None
    if driver is not None:
        driver.execute("PRAGMA foreign_keys=OFF")
    try:
        with connection.begin():
            if connection.dialect.name == "postgresql":
                # Controllers started together on a fresh database would each create the schema
                # (a duplicate alembic_version): one at a time, and the later ones, reading the
                # revision once the lock is theirs, find nothing left to do.
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            context.configure(
                connection=connection,
                target_metadata=Base.metadata,
                render_as_batch=sqlite,
            )
            context.run_migrations()
            if sqlite:
                broken = connection.execute(text("PRAGMA foreign_key_check")).all()
                if broken:
                    raise RuntimeError(
                        f"the migrations left rows whose foreign keys point nowhere: {broken[:5]}"
                    )
    finally:
        if driver is not None:
            driver.execute("PRAGMA foreign_keys=ON")
