"""Read projects, versions and sdists from the upstream: a PEP 691/503 index or a sdist folder."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urldefrag

import pypi_simple
import requests
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from . import __version__
from .errors import InputError, UpstreamError


@dataclass(frozen=True)
class Release:
    """One version of a project as the upstream lists it."""

    version: str  # normalized with packaging.version.Version
    sdist_filename: str | None  # None: binary only (wheels and no sdist)
    sdist_url: str | None  # absolute URL (or file:// URL for a local folder)
    sdist_sha256: str | None
    requires_python: str | None
    release_time: datetime | None  # earliest upload-time of the version's files, UTC-aware
    yanked: bool = False
    yanked_reason: str | None = None


@dataclass(frozen=True)
class ProjectPage:
    """A project's page: its display name and releases, newest knowledge of the upstream."""

    name: str  # canonical
    display_name: str
    releases: list[Release] = field(default_factory=list)
    etag: str | None = None


# PEP 691 JSON when the index offers it, PEP 503 HTML otherwise.
ACCEPT_PROJECT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
)
# The root listing is the one huge page (PyPI: 900,000+ names). HTML is parsed as it streams
# in, JSON only as a whole document, so HTML is preferred there; JSON-only indexes still work.
ACCEPT_ROOT = (
    "application/vnd.pypi.simple.v1+html, text/html;q=0.5, application/vnd.pypi.simple.v1+json;q=0.1"
)
HTML_TYPES = frozenset({"application/vnd.pypi.simple.v1+html", "text/html"})
# PEP 508 project names; ASCII only, as IGNORECASE alone lets the Kelvin sign pass for a "k".
NAME_RE = re.compile(r"[A-Z0-9](?:[A-Z0-9._-]*[A-Z0-9])?", re.IGNORECASE | re.ASCII)
# The sdist formats pip builds from, most preferred first.
SDIST_SUFFIXES = (".tar.gz", ".zip")
LOCAL_SUFFIXES = (*SDIST_SUFFIXES, ".whl")

logger = logging.getLogger(__name__)


class _LocalFile(NamedTuple):
    """A distribution file in a local upstream folder, its name parsed."""

    path: Path
    project: str  # as spelled in the filename
    version: str  # as spelled in the filename
    package_type: str  # "sdist", "wheel", ... as pypi-simple tells them apart
    stat: os.stat_result


class Upstream:
    """Reads the upstream: a PEP 691/503 index URL (trailing slash) or a local folder of sdists."""

    def __init__(self, location: str, *, timeout: float = 30.0) -> None:
        self.location = location
        self._timeout = timeout
        is_url = location.startswith(("http://", "https://"))
        self._folder = None if is_url else Path(location)
        self._session = requests.Session()
        self._session.headers["User-Agent"] = f"piwheels-ctl/{__version__}"

    def __enter__(self) -> Upstream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the HTTP connections."""
        self._session.close()

    def project(self, name: str, etag: str | None = None) -> ProjectPage | None:
        """The project's page, or None when it is unchanged since the page that had ``etag``."""
        if not NAME_RE.fullmatch(name):
            raise InputError(f"{name!r}: not a valid project name")
        if self._folder is not None:
            return self._local_project(self._folder, name, etag)
        canonical = canonicalize_name(name)
        url = f"{self.location}{canonical}/"
        headers = {"Accept": ACCEPT_PROJECT}
        if etag is not None:
            headers["If-None-Match"] = etag
        response = self._get(url, headers, stream=False)
        if response.status_code == 304:
            return None
        if response.status_code == 404:
            raise InputError(f"{name}: the upstream {self.location} has no such project")
        self._check_status(url, response)
        # Indexes (and proxies) that send no ETag still get an unchanged page skipped: the
        # body's digest stands in for it, saving the parsing and the database work.
        new_etag = response.headers.get("ETag") or f"sha256:{hashlib.sha256(response.content).hexdigest()}"
        if new_etag == etag:
            return None
        try:
            page = pypi_simple.ProjectPage.from_response(response, name)
        except (ValueError, pypi_simple.UnsupportedRepoVersionError) as exc:
            raise UpstreamError(f"{url}: not a project page we can read: {exc}") from exc
        return ProjectPage(
            name=canonical,
            display_name=page.project or name,
            releases=_releases(page.packages, page.versions or [], url),
            etag=new_etag,
        )

    def project_names(self) -> Iterator[tuple[str, str]]:
        """Every project of the upstream as (canonical name, display name), streamed."""
        if self._folder is not None:
            names: dict[str, str] = {}
            for file in self._local_files(self._folder, warn=True):
                names.setdefault(canonicalize_name(file.project), file.project)
            yield from sorted(names.items())
            return
        url = self.location
        with self._get(url, {"Accept": ACCEPT_ROOT}, stream=True) as response:
            self._check_status(url, response)
            try:
                for display in _index_names(response):
                    if NAME_RE.fullmatch(display):
                        yield canonicalize_name(display), display
                    else:
                        logger.warning("%s: ignored %r: not a valid project name", url, display)
            # First: requests' JSONDecodeError is a ValueError and a RequestException both.
            except (ValueError, pypi_simple.UnsupportedRepoVersionError) as exc:
                raise UpstreamError(f"{url}: not a project list we can read: {exc}") from exc
            except requests.RequestException as exc:
                raise UpstreamError(f"{url}: the project list broke off: {exc}") from exc

    def _get(self, url: str, headers: dict[str, str], *, stream: bool) -> requests.Response:
        """GET ``url``, turning every failure to get an answer into UpstreamError."""
        try:
            return self._session.get(url, headers=headers, timeout=self._timeout, stream=stream)
        except requests.RequestException as exc:
            raise UpstreamError(f"{url}: the upstream did not answer: {exc}") from exc

    @staticmethod
    def _check_status(url: str, response: requests.Response) -> None:
        """Raise UpstreamError unless the response is a success."""
        if response.status_code != 200:
            response.close()
            raise UpstreamError(f"{url}: the upstream answered HTTP {response.status_code} {response.reason}")

    def _local_project(self, folder: Path, name: str, etag: str | None) -> ProjectPage | None:
        """The project's page made from its files in the folder."""
        canonical = canonicalize_name(name)
        files = [f for f in self._local_files(folder) if canonicalize_name(f.project) == canonical]
        if not files:
            raise InputError(f"{name}: the upstream {self.location} has no such project")
        # Names, sizes and times stand for the contents: hashing every file on every sync of a
        # big folder would cost far more than it saves.
        digest = hashlib.sha256()
        for file in files:
            digest.update(f"{file.path.name}\0{file.stat.st_size}\0{file.stat.st_mtime_ns}\n".encode())
        new_etag = digest.hexdigest()
        if new_etag == etag:
            return None
        try:
            packages = [
                pypi_simple.DistributionPackage(
                    filename=file.path.name,
                    url=file.path.as_uri(),
                    project=file.project,
                    version=file.version,
                    package_type=file.package_type,
                    digests={"sha256": _file_sha256(file.path)},
                    requires_python=None,
                    has_sig=None,
                    size=file.stat.st_size,
                    upload_time=datetime.fromtimestamp(file.stat.st_mtime, timezone.utc),
                )
                for file in files
            ]
        except OSError as exc:
            raise UpstreamError(f"{folder}: cannot read the upstream folder: {exc}") from exc
        return ProjectPage(
            name=canonical,
            display_name=files[0].project,
            releases=_releases(packages, [], str(folder)),
            etag=new_etag,
        )

    @staticmethod
    def _local_files(folder: Path, *, warn: bool = False) -> list[_LocalFile]:
        """The sdists and wheels in the folder whose names parse, sorted by filename."""
        files = []
        try:
            for path in sorted(folder.iterdir()):
                if not path.name.endswith(LOCAL_SUFFIXES) or not path.is_file():
                    continue
                try:
                    project, version, package_type = pypi_simple.parse_filename(path.name)
                except pypi_simple.UnparsableFilenameError:
                    # Said once per listing of all projects, not again for each project.
                    logger.log(
                        logging.WARNING if warn else logging.DEBUG,
                        "%s: ignored: not a distribution filename",
                        path,
                    )
                    continue
                files.append(_LocalFile(path, project, version, package_type, path.stat()))
        except OSError as exc:
            raise UpstreamError(f"{folder}: cannot read the upstream folder: {exc}") from exc
        return files


def _releases(
    packages: Iterable[pypi_simple.DistributionPackage], versions: Iterable[str], where: str
) -> list[Release]:
    """The releases made of a project page's files (and file-less listed versions), by version."""
    by_version: dict[str, tuple[Version, list[pypi_simple.DistributionPackage]]] = {}
    for package in packages:
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


def _release(version: str, files: list[pypi_simple.DistributionPackage]) -> Release:
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
    return Release(
        version=version,
        sdist_filename=sdist.filename if sdist is not None else None,
        sdist_url=urldefrag(sdist.url).url if sdist is not None else None,
        sdist_sha256=sha256.lower() if sha256 else None,
        requires_python=requires_python,
        release_time=min(times, default=None),
        yanked=yanked,
        yanked_reason=next((f.yanked_reason for f in files if f.yanked_reason), None) if yanked else None,
    )


def _utc(moment: datetime) -> datetime:
    """The moment as a UTC-aware datetime (a naive one is taken to be UTC already)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _index_names(response: requests.Response) -> Iterator[str]:
    """The project names of a root listing, as spelled there; HTML is parsed as it streams in."""
    content_type = response.headers.get("Content-Type", "text/html").split(";")[0].strip().lower()
    if content_type in HTML_TYPES:
        for link in pypi_simple.parse_links_stream_response(response):
            yield link.text
    else:
        yield from pypi_simple.IndexPage.from_response(response).projects


def _file_sha256(path: Path) -> str:
    """The sha256 of the file's contents, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
