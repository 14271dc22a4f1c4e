"""Read projects, versions and sdists from the upstream: a PEP 691/503 index or a sdist folder."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urldefrag, urlsplit
from urllib.request import url2pathname

import pypi_simple
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from ..errors import InputError, ProjectGone, UpstreamError
from .fetcher import Answer, Fetcher


@dataclass(frozen=True)
class WheelLink:
    """A wheel the upstream publishes that may install on a platform we build for."""

    filename: str
    url: str  # absolute URL (or file:// URL for a local folder)
    sha256: str  # lower-case hex, as the upstream lists it
    requires_python: str | None
    size: int | None  # as the upstream declares it (PEP 700), when it does


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
    wheels: tuple[WheelLink, ...] = ()  # for Linux or any platform, not yanked, with a sha256


@dataclass(frozen=True)
class ProjectPage:
    """A project's page: its display name and releases, newest knowledge of the upstream."""

    name: str  # canonical
    display_name: str
    releases: list[Release] = field(default_factory=list)
    etag: str | None = None
    last_modified: str | None = None  # the Last-Modified the upstream sent, for If-Modified-Since


# PEP 691 JSON when the index offers it, PEP 503 HTML otherwise.
ACCEPT_PROJECT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
)
# The root listing is the one huge page (PyPI: 900,000+ names). HTML is parsed as it streams
# in, JSON only as a whole document, so HTML is preferred there; JSON-only indexes still work.
ACCEPT_ROOT = (
    "application/vnd.pypi.simple.v1+html, text/html;q=0.5, application/vnd.pypi.simple.v1+json;q=0.1"
)
# The root listing with each project's serial: PEP 691 JSON only (HTML has no serials).
ACCEPT_SERIALS = "application/vnd.pypi.simple.v1+json, text/html;q=0.01"
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPES = frozenset({"application/vnd.pypi.simple.v1+html", "text/html"})
# Size caps of a page, checked as it streams in. PyPI's root listing (every project name) is
# tens of MB; its biggest project pages (thousands of files) a few MB.
ROOT_PAGE_MAX = 64 * 1024 * 1024
PROJECT_PAGE_MAX = 16 * 1024 * 1024
# The root listing is one huge page: it gets this many times http_timeout as a whole.
ROOT_TIME_FACTOR = 10
# Simple index pages nest a handful of elements (html, body, a); this is far past any real one.
HTML_DEPTH_MAX = 64
VOID_ELEMENTS = frozenset(
    {
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
    }
)
ETAG_MAX = 255  # what the database keeps (projects.etag)
LAST_MODIFIED_MAX = 64  # what the database keeps (projects.last_modified)
# Project pages fetched at once by a sync (and HTTP connections kept to the upstream).
WORKERS = 8
# PEP 508 project names; ASCII only, as IGNORECASE alone lets the Kelvin sign pass for a "k".
NAME_RE = re.compile(r"[A-Z0-9](?:[A-Z0-9._-]*[A-Z0-9])?", re.IGNORECASE | re.ASCII)
# The sdist formats pip builds from, most preferred first.
SDIST_SUFFIXES = (".tar.gz", ".zip")
LOCAL_SUFFIXES = (*SDIST_SUFFIXES, ".whl")
# Marks an ETag of ours: the digest of a page whose upstream sent none (never sent back to it).
DIGEST_PREFIX = "sha256:"
# Platform tags of wheels that may install on a builder (musllinux never does: Debian is glibc).
LINUX_PLATFORMS = ("linux_", "manylinux")
SHA256_RE = re.compile(r"[0-9a-f]{64}")

logger = logging.getLogger(__name__)


class _LocalFile(NamedTuple):
    """A distribution file in a local upstream folder, its name parsed."""

    path: Path
    project: str  # as spelled in the filename
    version: str  # as spelled in the filename
    package_type: str  # "sdist", "wheel", ... as pypi-simple tells them apart
    stat: os.stat_result


class Upstream:
    """Reads the upstream: a PEP 691/503 index URL (trailing slash) or a local folder of sdists.

    An index is untrusted input: each request has ``timeout`` seconds as a whole (the root
    listing ROOT_TIME_FACTOR times that), each page a size cap, and redirects may lead only to
    the index's own host or to ``redirect_hosts``.
    """

    def __init__(
        self,
        location: str,
        *,
        timeout: float = 30.0,
        redirect_hosts: Iterable[str] = (),
        workers: int = WORKERS,
    ) -> None:
        self.location = location
        self.workers = workers  # how many pages a sync may fetch at once (threads may share this)
        self._timeout = timeout
        is_url = location.startswith(("http://", "https://"))
        self._folder = None if is_url else Path(location)
        self._http = Fetcher(location, frozenset(h.lower() for h in redirect_hosts), connections=workers)

    def __enter__(self) -> Upstream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the HTTP connections."""
        self._http.close()

    def project(
        self, name: str, etag: str | None = None, last_modified: str | None = None
    ) -> ProjectPage | None:
        """The project's page, or None when it is unchanged since the page that had ``etag``
        (or was last modified at ``last_modified``): ProjectGone when the upstream has no such
        project. Safe to call from several threads at once."""
        if not NAME_RE.fullmatch(name):
            raise InputError(f"{name!r}: not a valid project name")
        if self._folder is not None:
            return self._local_project(self._folder, name, etag)
        canonical = canonicalize_name(name)
        url = f"{self.location}{canonical}/"
        headers = {"Accept": ACCEPT_PROJECT}
        # A digest of our own (see below) means nothing to the upstream: only its ETags are sent.
        if etag is not None and not etag.startswith(DIGEST_PREFIX):
            headers["If-None-Match"] = etag
        if last_modified is not None:
            headers["If-Modified-Since"] = last_modified
        with self._http.get(url, headers, seconds=self._timeout, limit=PROJECT_PAGE_MAX) as answer:
            if answer.status == 304:
                return None
            if answer.status in (404, 410):
                raise ProjectGone(f"{name}: the upstream {self.location} has no such project")
            _check_status(url, answer)
            media, charset = _page_type(url, answer, "project page")
            body = answer.read()
        # Indexes (and proxies) that send no ETag still get an unchanged page skipped: the
        # body's digest stands in for it, saving the parsing and the database work. An ETag
        # too long to keep is replaced by the digest too.
        new_etag = answer.headers.get("ETag") or ""
        if not new_etag or len(new_etag) > ETAG_MAX:
            new_etag = f"{DIGEST_PREFIX}{hashlib.sha256(body).hexdigest()}"
        if new_etag == etag:
            return None
        modified = answer.headers.get("Last-Modified") or None
        page = _parse_project(url, name, media, charset, body)
        return ProjectPage(
            name=canonical,
            display_name=page.project or name,
            releases=_releases(page.packages, page.versions or [], url),
            etag=new_etag,
            last_modified=modified if modified and len(modified) <= LAST_MODIFIED_MAX else None,
        )

    def serials(self) -> dict[str, int] | None:
        """Every project's last serial (canonical name -> serial) from the upstream's PEP 691
        JSON root listing, or None when the upstream does not offer serials (a folder, an HTML
        root, a JSON root without ``_last-serial``): then each page must be asked for."""
        if self._folder is not None:
            return None
        url = self.location
        seconds = self._timeout * ROOT_TIME_FACTOR
        headers = {"Accept": ACCEPT_SERIALS}
        with self._http.get(url, headers, seconds=seconds, limit=ROOT_PAGE_MAX) as answer:
            if answer.status in (406, 415):  # the upstream serves no JSON root
                return None
            _check_status(url, answer)
            media, _charset = _page_type(url, answer, "project list")
            if media != JSON_TYPE:
                return None  # left unread: an HTML root has no serials
            body = answer.read()
        try:
            data = _json(body)
        except (ValueError, RecursionError) as exc:
            raise UpstreamError(f"{url}: not a project list we can read: {_short(exc)}") from exc
        projects = data.get("projects") if isinstance(data, dict) else None
        if not isinstance(projects, list):
            raise UpstreamError(f"{url}: not a project list we can read: no list of projects")
        serials: dict[str, int] = {}
        for entry in projects:
            display = entry.get("name") if isinstance(entry, dict) else None
            serial = entry.get("_last-serial") if isinstance(entry, dict) else None
            if not isinstance(display, str):
                raise UpstreamError(f"{url}: not a project list we can read: a project without a name")
            if not isinstance(serial, int) or isinstance(serial, bool):
                return None  # serials for some projects only are no use: ask every page
            if NAME_RE.fullmatch(display):
                serials[canonicalize_name(display)] = serial
            else:
                logger.warning("%s: ignored %r: not a valid project name", url, display[:100])
        return serials

    def download(self, url: str, dest: Path, *, sha256: str, limit: int, seconds: float) -> int:
        """Fetch the file at ``url`` (listed on a project page) to ``dest``; its size.

        The whole fetch has ``seconds``, the file ``limit`` bytes, and it must have the
        ``sha256`` the page listed: UpstreamError otherwise (``dest`` is then removed). A local
        folder's files are read from that folder only, an index's over HTTP(S) only.
        """
        digest = hashlib.sha256()
        size = 0
        try:
            with open(dest, "wb") as out:
                for chunk in self._file_chunks(url, limit, seconds):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            if digest.hexdigest() != sha256:
                raise UpstreamError(
                    f"{url}: sha256 {digest.hexdigest()} differs from the {sha256} the upstream lists"
                )
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return size

    def _file_chunks(self, url: str, limit: int, seconds: float) -> Iterator[bytes]:
        scheme = urlsplit(url).scheme
        if self._folder is None:
            if scheme not in ("http", "https"):
                raise UpstreamError(f"{url}: an index's files are fetched over HTTP(S) only")
            self._http.check_file_host(url)
            with self._http.get(url, {}, seconds=seconds, limit=limit, what="file") as answer:
                _check_status(url, answer)
                yield from answer.chunks
            return
        path = Path(url2pathname(urlsplit(url).path)) if scheme == "file" else None
        if path is None or path.parent != self._folder.resolve():
            raise UpstreamError(f"{url}: not a file of the upstream folder {self._folder}")
        try:
            with open(path, "rb") as f:
                read = 0
                while chunk := f.read(1 << 20):
                    read += len(chunk)
                    if read > limit:
                        raise UpstreamError(f"{url}: the file is larger than the {limit:,} bytes allowed")
                    yield chunk
        except OSError as exc:
            raise UpstreamError(f"{url}: cannot read the upstream's file: {exc}") from exc

    def project_names(self) -> Iterator[tuple[str, str]]:
        """Every project of the upstream as (canonical name, display name), streamed."""
        if self._folder is not None:
            names: dict[str, str] = {}
            for file in self._local_files(self._folder, warn=True):
                names.setdefault(canonicalize_name(file.project), file.project)
            yield from sorted(names.items())
            return
        url = self.location
        seconds = self._timeout * ROOT_TIME_FACTOR
        with self._http.get(url, {"Accept": ACCEPT_ROOT}, seconds=seconds, limit=ROOT_PAGE_MAX) as answer:
            _check_status(url, answer)
            media, charset = _page_type(url, answer, "project list")
            try:
                for display in _index_names(url, media, charset, answer):
                    if NAME_RE.fullmatch(display):
                        yield canonicalize_name(display), display
                    else:
                        logger.warning("%s: ignored %r: not a valid project name", url, display[:100])
            except (ValueError, RecursionError, pypi_simple.UnsupportedRepoVersionError) as exc:
                raise UpstreamError(f"{url}: not a project list we can read: {_short(exc)}") from exc

    def _local_project(self, folder: Path, name: str, etag: str | None) -> ProjectPage | None:
        """The project's page made from its files in the folder."""
        canonical = canonicalize_name(name)
        files = [f for f in self._local_files(folder) if canonicalize_name(f.project) == canonical]
        if not files:
            raise ProjectGone(f"{name}: the upstream {self.location} has no such project")
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
    wheels = tuple(link for f in files if (link := _wheel_link(f)) is not None)
    return Release(
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


def _check_status(url: str, answer: Answer) -> None:
    """Raise UpstreamError unless the answer is a success."""
    if answer.status != 200:
        raise UpstreamError(f"{url}: the upstream answered HTTP {answer.status} {answer.reason}")


def _page_type(url: str, answer: Answer, what: str) -> tuple[str, str | None]:
    """The page's media type and charset; a page of no or another type is refused, not guessed at."""
    media, charset = answer.content_type
    if media != JSON_TYPE and media not in HTML_TYPES:
        shown = repr(media) if media else "none"
        raise UpstreamError(f"{url}: not a {what} we can read: Content-Type {shown}, not HTML or JSON")
    return media, charset


def _short(exc: BaseException) -> str:
    """An exception's message, cut to one line of reasonable length (hostile input can be long)."""
    if isinstance(exc, RecursionError):
        return "nested too deep"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def _parse_project(
    url: str, name: str, media: str, charset: str | None, body: bytes
) -> pypi_simple.ProjectPage:
    """The project page parsed by pypi-simple, after the checks that keep hostile pages out of it."""
    try:
        if media == JSON_TYPE:
            return pypi_simple.ProjectPage.from_json_data(_json(body), url)
        for _chunk in _check_html(_markup_first([body]), url):
            pass  # checked whole before the parse, which builds a tree
        return pypi_simple.ProjectPage.from_html(name, body, base_url=url, from_encoding=charset)
    except (ValueError, RecursionError, pypi_simple.UnsupportedRepoVersionError) as exc:
        raise UpstreamError(f"{url}: not a project page we can read: {_short(exc)}") from exc


def _json(body: bytes) -> object:
    """The decoded JSON (a nesting too deep for the decoder raises RecursionError, caught by callers)."""
    return json.loads(body)


def _markup_first(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The chunks, refused unless the page starts with markup: JSON or text labelled HTML is not HTML."""
    started = False
    for chunk in chunks:
        if not started:
            head = chunk.lstrip().removeprefix(b"\xef\xbb\xbf").lstrip()
            if not head:
                continue
            if not head.startswith(b"<"):
                raise ValueError("labelled HTML, but it does not start with markup")
            started = True
        yield chunk
    if not started:
        raise ValueError("labelled HTML, but empty")


class _DepthCheck(HTMLParser):
    """Follows the nesting of elements, refusing it past HTML_DEPTH_MAX or a link inside a link.

    pypi-simple's parsers take time that grows with the square of such nesting (every link's
    text is gathered from all it encloses); simple index pages never nest at all.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self._open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in VOID_ELEMENTS:
            return
        if tag == "a" and "a" in self._open:
            raise ValueError("a link inside a link")
        self._open.append(tag)
        if len(self._open) > HTML_DEPTH_MAX:
            raise ValueError(f"elements nested more than {HTML_DEPTH_MAX} deep")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """A self-closed element opens nothing."""

    def handle_endtag(self, tag: str) -> None:
        if tag in self._open:
            while self._open.pop() != tag:
                pass


def _check_html(chunks: Iterable[bytes], url: str) -> Iterator[bytes]:
    """The chunks, each checked by _DepthCheck before it is passed on."""
    checker = _DepthCheck()
    for chunk in chunks:
        checker.feed(chunk.decode("utf-8", "replace"))
        yield chunk
    checker.close()


def _index_names(url: str, media: str, charset: str | None, answer: Answer) -> Iterator[str]:
    """The project names of a root listing, as spelled there; HTML is parsed as it streams in."""
    if media in HTML_TYPES:
        checked = _check_html(_markup_first(answer.chunks), url)
        for link in pypi_simple.parse_links_stream(checked, base_url=url, http_charset=charset):
            yield link.text
    else:
        yield from pypi_simple.IndexPage.from_json_data(_json(answer.read())).projects


def _file_sha256(path: Path) -> str:
    """The sha256 of the file's contents, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
