"""A project's page as the upstream lists it (IndexPage, IndexRelease, WheelLink), made from its files."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import urldefrag, urlsplit

import pypi_simple
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from ..errors import InputError

# PEP 508 project names; ASCII only, as IGNORECASE alone lets the Kelvin sign pass for a "k".
NAME_RE = re.compile(r"[A-Z0-9](?:[A-Z0-9._-]*[A-Z0-9])?", re.IGNORECASE | re.ASCII)
# The sdist formats pip builds from, most preferred first.
SDIST_SUFFIXES = (".tar.gz", ".zip")
# Platform tags of wheels that may install on a builder (musllinux never does: Debian is glibc).
LINUX_PLATFORMS = ("linux_", "manylinux")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
# The URL schemes of an index's files (a folder upstream's are its own file: URLs).
HTTP_SCHEMES = ("http", "https")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WheelLink:
    """A wheel the upstream publishes that may install on a platform we build for."""

    filename: str
    url: str  # absolute http(s) URL (or file:// URL of a local folder's own file)
    sha256: str  # lower-case hex, as the upstream lists it
    requires_python: str | None
    size: int | None  # as the upstream declares it (PEP 700), when it does


@dataclass(frozen=True)
class IndexRelease:
    """One version of a project as the upstream lists it."""

    version: str  # normalized with packaging.version.Version
    sdist_filename: str | None  # None: binary only (wheels and no sdist)
    sdist_url: str | None  # absolute http(s) URL (or file:// URL of a local folder's own file)
    sdist_sha256: str | None
    requires_python: str | None
    release_time: datetime | None  # earliest upload-time of the version's files, UTC-aware
    yanked: bool = False
    yanked_reason: str | None = None
    wheels: tuple[WheelLink, ...] = ()  # for Linux or any platform, not yanked, with a sha256


@dataclass(frozen=True)
class IndexPage:
    """A project's page: its display name and releases, newest knowledge of the upstream."""

    name: str  # canonical
    display_name: str
    releases: list[IndexRelease] = field(default_factory=list)
    etag: str | None = None
    last_modified: str | None = None  # the Last-Modified the upstream sent, for If-Modified-Since


def check_name(name: str) -> None:
    """Refuse ``name`` (InputError) unless it is a PEP 508 project name."""
    if not NAME_RE.fullmatch(name):
        raise InputError(f"{name!r}: not a valid project name")


def releases(
    packages: Iterable[pypi_simple.DistributionPackage],
    versions: Iterable[str],
    where: str,
    schemes: tuple[str, ...],
) -> list[IndexRelease]:
    """The releases made of a project page's files (and file-less listed versions), by version;
    a file whose URL is of a scheme other than ``schemes`` is left out, with a warning."""
    by_version: dict[str, tuple[Version, list[pypi_simple.DistributionPackage]]] = {}
    for package in packages:
        scheme = urlsplit(package.url).scheme.lower()
        if scheme not in schemes:
            # An index's page could name this machine's files (file:///...), or other schemes.
            logger.warning(
                "%s: %s: ignored: a %r URL, not %s", where, package.filename, scheme, "/".join(schemes)
            )
            continue
        version = _version(package.version, f"{where}: {package.filename}")
        if version is not None:
            by_version.setdefault(str(version), (version, []))[1].append(package)
    for listed in versions:
        version = _version(listed, f"{where}: version {listed!r}")
        if version is not None:
            by_version.setdefault(str(version), (version, []))
    ordered = sorted(by_version.items(), key=lambda item: item[1][0])
    return [_release(key, files) for key, (_, files) in ordered]


def _version(raw: str | None, what: str) -> Version | None:
    """The version, or None (with a warning) when it is not PEP 440 valid."""
    if raw is None:
        logger.warning("%s: ignored: no version in the filename", what)
        return None
    try:
        return Version(raw)
    except InvalidVersion:
        logger.warning("%s: ignored: %r is not a PEP 440 version", what, raw)
        return None


def _release(version: str, files: list[pypi_simple.DistributionPackage]) -> IndexRelease:
    """One version's release: its preferred sdist, and what its files say together."""
    sdists = sorted(
        (f for f in files if f.package_type == "sdist" and f.filename.endswith(SDIST_SUFFIXES)),
        key=lambda f: (not f.filename.endswith(SDIST_SUFFIXES[0]), f.filename),
    )
    sdist = sdists[0] if sdists else None
    # The sdist is what gets built, so its requires-python wins over the other files'.
    candidates = [sdist, *files] if sdist is not None else files
    requires_python = next((f.requires_python for f in candidates if f.requires_python), None)
    times = [_utc(f.upload_time) for f in files if f.upload_time is not None]
    yanked = bool(files) and all(f.is_yanked for f in files)
    sha256 = sdist.digests.get("sha256") if sdist is not None else None
    wheels = tuple(link for f in files if (link := _wheel_link(f)) is not None)
    return IndexRelease(
        version=version,
        sdist_filename=sdist.filename if sdist is not None else None,
        sdist_url=urldefrag(sdist.url).url if sdist is not None else None,
        sdist_sha256=sha256.lower() if sha256 else None,
        requires_python=requires_python,
        release_time=min(times, default=None),
        yanked=yanked,
        yanked_reason=next((f.yanked_reason for f in files if f.yanked_reason), None) if yanked else None,
        wheels=wheels,
    )


def _wheel_link(package: pypi_simple.DistributionPackage) -> WheelLink | None:
    """The file as a WheelLink when it is a wheel that might cover one of our targets: a valid
    name, a tag for any platform or for Linux, a sha256 to check it against, not yanked."""
    if package.package_type != "wheel" or package.is_yanked:
        return None
    try:
        _name, _version, _build, tags = parse_wheel_filename(package.filename)
    except InvalidWheelFilename:
        return None
    if not any(t.platform == "any" or t.platform.startswith(LINUX_PLATFORMS) for t in tags):
        return None
    sha256 = (package.digests.get("sha256") or "").lower()
    if not SHA256_RE.fullmatch(sha256):
        return None
    return WheelLink(
        filename=package.filename,
        url=urldefrag(package.url).url,
        sha256=sha256,
        requires_python=package.requires_python,
        size=package.size,
    )


def _utc(moment: datetime) -> datetime:
    """The moment as a UTC-aware datetime (a naive one is taken to be UTC already)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)
