"""The database schema: SQLAlchemy 2.0 declarative models (every change is an Alembic migration)."""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
    false,
    inspect,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.orm.attributes import flag_modified


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class BuildStatus(enum.Enum):
    BUILDING = "building"
    SUCCESS = "success"
    FAILED = "failed"


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Project(Base):
    """A project of the upstream index; ``watched`` ones have their versions synced and built."""

    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)  # canonical (PEP 503)
    display_name: Mapped[str] = mapped_column(String(255))
    watched: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    skip_reason: Mapped[str | None] = mapped_column(Text)
    etag: Mapped[str | None] = mapped_column(String(255))
    # What the upstream said of the page last time: its Last-Modified (for If-Modified-Since),
    # and the project's serial in the upstream's root listing (PEP 691 ``_last-serial``): a sync
    # fetches the page again only when that serial changed.
    last_modified: Mapped[str | None] = mapped_column(String(64))
    serial: Mapped[int | None] = mapped_column(BigInteger)
    # When the upstream stopped having the project (404 on its page, gone from its listing).
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set whenever something the index shows changes; cleared by the publisher.
    dirty: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    # Raised by every marking dirty: the publisher clears ``dirty`` only where the generation is
    # still the one it published, so a change committed while it was publishing stays dirty.
    dirty_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Why the project goes to native (or emulated) builders only: its one cross build failed or
    # its cross-built wheel did not load on the target. None: cross builders may take it.
    native_only: Mapped[str | None] = mapped_column(Text)
    # The name the published root index lists the project under (None: not listed): the
    # publisher patches the root only where this differs from what it should list now.
    listed_name: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (
        # The few projects skipped by hand.
        Index(
            "ix_projects_skipped",
            "id",
            sqlite_where=text("skip_reason IS NOT NULL"),
            postgresql_where=text("skip_reason IS NOT NULL"),
        ),
    )

    versions: Mapped[list[Version]] = relationship(back_populates="project", cascade="all, delete-orphan")


@event.listens_for(Project.dirty, "set")
def _marked_dirty(target: Project, value: bool, _old: object, _initiator: object) -> None:
    """Marking a stored project dirty is always written, with a new generation.

    The ORM leaves out an UPDATE that sets the value its snapshot already shows; but the
    publisher may be clearing the flag at that very moment, so the write must happen anyway.
    """
    state = inspect(target)
    if value is not True or not state.has_identity:
        return
    if "dirty" in state.dict:
        flag_modified(target, "dirty")
    # A SQL expression, so two writers never hand out the same generation.
    target.dirty_generation = Project.dirty_generation + 1


class Version(Base):
    """One release of a project, with the sdist the builders compile."""

    __tablename__ = "versions"
    __table_args__ = (
        UniqueConstraint("project_id", "version"),
        Index("ix_versions_queue_order", "priority", "release_time"),
        # The few versions without an sdist (they wait for one, "no-sdist").
        Index(
            "ix_versions_no_sdist",
            "release_time",
            sqlite_where=text("sdist_url IS NULL"),
            postgresql_where=text("sdist_url IS NULL"),
        ),
        # The few versions skipped by hand.
        Index(
            "ix_versions_skipped",
            "project_id",
            sqlite_where=text("skip_reason IS NOT NULL"),
            postgresql_where=text("skip_reason IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    version: Mapped[str] = mapped_column(String(128))  # normalized by packaging
    release_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    yanked: Mapped[bool] = mapped_column(Boolean, default=False)
    yanked_reason: Mapped[str | None] = mapped_column(Text)
    skip_reason: Mapped[str | None] = mapped_column(Text)
    sdist_filename: Mapped[str | None] = mapped_column(String(255))
    sdist_url: Mapped[str | None] = mapped_column(Text)
    sdist_sha256: Mapped[str | None] = mapped_column(String(64))
    requires_python: Mapped[str | None] = mapped_column(String(255))
    # Explicitly requested versions (add NAME==V, rebuild) are built before everything else.
    priority: Mapped[int] = mapped_column(Integer, default=0)

    project: Mapped[Project] = relationship(back_populates="versions")
    builds: Mapped[list[Build]] = relationship(back_populates="version", cascade="all, delete-orphan")
    files: Mapped[list[File]] = relationship(back_populates="version", cascade="all, delete-orphan")
    upstream_wheels: Mapped[list[UpstreamWheel]] = relationship(
        back_populates="version", cascade="all, delete-orphan"
    )


class Abi(Base):
    """A Python ABI a builder can build for: interpreter tag, ABI tag and platform tag."""

    __tablename__ = "abis"
    __table_args__ = (UniqueConstraint("tag"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tag: Mapped[str] = mapped_column(String(128))  # e.g. cp311-cp311-linux_x86_64
    python_tag: Mapped[str] = mapped_column(String(32))
    abi_tag: Mapped[str] = mapped_column(String(32))
    platform_tag: Mapped[str] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Builder(Base):
    """A machine that builds: ``local`` (this one) or reached over SSH."""

    __tablename__ = "builders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    host: Mapped[str | None] = mapped_column(String(255))  # None: the local builder
    port: Mapped[int] = mapped_column(Integer, default=22)
    user: Mapped[str | None] = mapped_column(String(64))
    key_file: Mapped[str | None] = mapped_column(Text)
    host_key: Mapped[str | None] = mapped_column(Text)
    slots: Mapped[int] = mapped_column(Integer, default=1)
    healthy: Mapped[bool] = mapped_column(Boolean, default=True)
    retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    pythons: Mapped[list[BuilderPython]] = relationship(
        back_populates="builder", cascade="all, delete-orphan"
    )


class BuilderPython(Base):
    """An interpreter on a builder and the ABI it builds for."""

    __tablename__ = "builder_pythons"
    __table_args__ = (UniqueConstraint("builder_id", "abi_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    builder_id: Mapped[int] = mapped_column(ForeignKey("builders.id", ondelete="CASCADE"))
    abi_id: Mapped[int] = mapped_column(ForeignKey("abis.id"))
    path: Mapped[str] = mapped_column(Text)

    builder: Mapped[Builder] = relationship(back_populates="pythons")
    abi: Mapped[Abi] = relationship()


class Build(Base):
    """One attempt to build one version for one ABI, and how it ended."""

    __tablename__ = "builds"
    __table_args__ = (
        Index("ix_builds_version_abi", "version_id", "abi_id"),
        # Builds by status (the leases under way, status counts) and failures by reason.
        Index("ix_builds_status_reason", "status", "failure_reason"),
        Index("ix_builds_builder_started", "builder_id", "started_at"),
        # The builds of the last hours and days (the statistics' figures and charts).
        Index("ix_builds_started", "started_at"),
        # The builds that compiled something (the compiler cache's hit rate in ``status``).
        Index(
            "ix_builds_ccache",
            "id",
            sqlite_where=text("ccache_hits IS NOT NULL"),
            postgresql_where=text("ccache_hits IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"))
    abi_id: Mapped[int] = mapped_column(ForeignKey("abis.id"))
    builder_id: Mapped[int | None] = mapped_column(ForeignKey("builders.id", ondelete="SET NULL"))
    status: Mapped[BuildStatus] = mapped_column(
        Enum(
            BuildStatus,
            values_callable=lambda e: [m.value for m in e],
            native_enum=False,
            length=16,
        )
    )
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    duration: Mapped[float | None] = mapped_column(Float)
    lease_expires: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(255))  # "host:pid" of the controller
    log_path: Mapped[str | None] = mapped_column(Text)
    failure_reason: Mapped[str | None] = mapped_column(String(64))
    failure_detail: Mapped[str | None] = mapped_column(Text)
    failure_evidence: Mapped[str | None] = mapped_column(Text)  # the log line the reason was read from
    # Debian packages that provide what was missing (None: not looked up yet).
    # [{"package", "why"}, ...] best first (before issue 24: package names only)
    failure_packages: Mapped[list[Any] | None] = mapped_column(JSON)
    # A rebuild keeps the earlier builds of a version as history; only the others count.
    superseded: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The compiler cache's hits and misses in this build (None: no ccache, or nothing compiled).
    ccache_hits: Mapped[int | None] = mapped_column(Integer)
    ccache_misses: Mapped[int | None] = mapped_column(Integer)
    # What the build noted without failing: a compiled module whose own init raised at import on
    # the builder (a missing Python dependency), in the interpreter's words. None: nothing.
    notes: Mapped[list[str] | None] = mapped_column(JSON)
    # A build that timed out and was built again with a longer limit: what the retry was.
    retried: Mapped[str | None] = mapped_column(Text)
    # The Debian architecture the build cross-built for (armhf, arm64); None: a native build.
    cross: Mapped[str | None] = mapped_column(String(16))

    version: Mapped[Version] = relationship(back_populates="builds")
    abi: Mapped[Abi] = relationship()
    builder: Mapped[Builder | None] = relationship()
    files: Mapped[list[File]] = relationship(back_populates="build")


class Handback(Base):
    """How many times in a row builders handed (version, ABI) back: their fault, not the project's."""

    __tablename__ = "handbacks"

    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True)
    abi_id: Mapped[int] = mapped_column(ForeignKey("abis.id", ondelete="CASCADE"), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class File(Base):
    """A wheel in the repository: what the index lists, with hashes taken at verification."""

    __tablename__ = "files"
    # The kinds of wheel (a new ABI is covered kind by kind, not file by file).
    __table_args__ = (Index("ix_files_tags", "python_tag", "abi_tag", "platform_tag"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    filename: Mapped[str] = mapped_column(String(255), unique=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"), index=True)
    build_id: Mapped[int | None] = mapped_column(ForeignKey("builds.id", ondelete="SET NULL"), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    python_tag: Mapped[str] = mapped_column(String(64))
    abi_tag: Mapped[str] = mapped_column(String(64))
    platform_tag: Mapped[str] = mapped_column(String(255))
    requires_python: Mapped[str | None] = mapped_column(String(255))
    metadata_sha256: Mapped[str] = mapped_column(String(64))
    core_metadata: Mapped[str] = mapped_column(Text)
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Fetched from the upstream as it was published there (mirrored), not built by us.
    mirrored: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The shared libraries its compiled modules link and the builder's Debian packages of them
    # ([{"library", "path", "package"}]); None where the builder did not say (imported, older).
    deps: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    # The OS release (codename) of the builder that built it, as it was then (None: mirrored,
    # or built before builders said): the release indexes list it there without a check.
    release: Mapped[str | None] = mapped_column(String(64))

    version: Mapped[Version] = relationship(back_populates="files")
    build: Mapped[Build | None] = relationship(back_populates="files")


class Coverage(Base):
    """That (version, ABI) needs no build: a file of the version installs on that ABI."""

    __tablename__ = "coverage"

    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True)
    abi_id: Mapped[int] = mapped_column(ForeignKey("abis.id", ondelete="CASCADE"), primary_key=True)
    file_id: Mapped[int] = mapped_column(
        ForeignKey("files.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class ReleaseCheck(Base):
    """A compiled file loaded (or to be loaded) by a builder of another OS release: ``pending``,
    ``checking`` (claimed, with a lease), ``passed`` (that release's index lists it) or
    ``refused`` (the loader's messages in ``failures``)."""

    __tablename__ = "release_checks"
    __table_args__ = (Index("ix_release_checks_status", "release", "status"),)

    file_id: Mapped[int] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"), primary_key=True)
    release: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    builder_id: Mapped[int | None] = mapped_column(ForeignKey("builders.id", ondelete="SET NULL"))
    lease_expires: Mapped[datetime | None] = mapped_column(UTCDateTime)
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failures: Mapped[list[str] | None] = mapped_column(JSON)
    notes: Mapped[list[str] | None] = mapped_column(JSON)


class UpstreamWheel(Base):
    """A wheel the upstream publishes for a version, that installs on some platform we build for.

    Such a wheel covers its ABIs (``UpstreamCoverage``): they are not built. With mirroring on,
    the controller fetches it and publishes it (``file_id``); a wheel that cannot be mirrored
    (its hash, its contents, or the upstream failing ``MIRROR_ATTEMPTS`` times) is ``given_up``
    and its ABIs are built after all.
    """

    __tablename__ = "upstream_wheels"
    __table_args__ = (UniqueConstraint("version_id", "filename"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(255))
    url: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int | None] = mapped_column(BigInteger)  # as the upstream declares it (PEP 700)
    requires_python: Mapped[str | None] = mapped_column(String(255))
    file_id: Mapped[int | None] = mapped_column(ForeignKey("files.id", ondelete="SET NULL"))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    given_up: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)  # why the last mirroring failed

    version: Mapped[Version] = relationship(back_populates="upstream_wheels")


class UpstreamCoverage(Base):
    """That (version, ABI) needs no build: a wheel the upstream publishes installs on that ABI."""

    __tablename__ = "upstream_coverage"

    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True)
    abi_id: Mapped[int] = mapped_column(ForeignKey("abis.id", ondelete="CASCADE"), primary_key=True)
    wheel_id: Mapped[int] = mapped_column(
        ForeignKey("upstream_wheels.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class PendingPair(Base):
    """A (version, ABI) pair that needs a build: the queue, kept by ``queue_upkeep``.

    ``priority`` and ``sort_time`` (the release time, ``NO_TIME`` for none) repeat the
    version's, so that the queue's order is an index: claims and listings read it in order.
    """

    __tablename__ = "pending_pairs"
    __table_args__ = (
        Index("ix_pending_pairs_order", "priority", "sort_time", "version_id", "abi_id"),
        Index("ix_pending_pairs_abi", "abi_id", "priority", "sort_time", "version_id"),
    )

    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True)
    abi_id: Mapped[int] = mapped_column(ForeignKey("abis.id", ondelete="CASCADE"), primary_key=True)
    priority: Mapped[int] = mapped_column(Integer)
    sort_time: Mapped[datetime] = mapped_column(UTCDateTime)


class Count(Base):
    """A count ``status`` shows, kept by triggers (``counts``): builds by status, files, …"""

    __tablename__ = "counts"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


class ServedFile(Base):
    """Every file name the index ever served and the bytes it had: a name never gets other bytes.

    Rows are never deleted, not even when the file is (``audit --fix``): a later build of the
    same wheel with other bytes gets a build tag instead of the old name.
    """

    __tablename__ = "served_files"

    filename: Mapped[str] = mapped_column(String(255), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    first_served: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
