"""Read a PEP 691/503 index over HTTP(S): project pages, the root listing with serials, its files."""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pypi_simple
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from ..errors import ProjectGone, UpstreamError
from .fetcher import Answer, Fetcher
from .htmlguard import DepthCheck, check_html, markup_first, short
from .page import HTTP_SCHEMES, NAME_RE, IndexPage, check_name, releases
from .source import WORKERS, save_checked

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
# A page whose Content-Type names no charset is UTF-8, as pip reads it (not a guess per page).
HTML_CHARSET = "utf-8"
# Size caps of a page, checked as it streams in. PyPI's root listing (every project name) is
# tens of MB; its biggest project pages (thousands of files) a few MB.
ROOT_PAGE_MAX = 64 * 1024 * 1024
PROJECT_PAGE_MAX = 16 * 1024 * 1024
# The root listing is one huge page: it gets this many times http_timeout as a whole.
ROOT_TIME_FACTOR = 10
ETAG_MAX = 255  # what the database keeps (projects.etag)
LAST_MODIFIED_MAX = 64  # what the database keeps (projects.last_modified)
# Marks an ETag of ours: the digest of a page whose upstream sent none (never sent back to it).
DIGEST_PREFIX = "sha256:"

logger = logging.getLogger(__name__)


class IndexUpstream:
    """An Upstream read from a PEP 691/503 index URL (trailing slash).

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
        self._http = Fetcher(location, frozenset(h.lower() for h in redirect_hosts), connections=workers)
        self._declared: set[str] = set()  # newer API versions said (_note_version)

    def __enter__(self) -> IndexUpstream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the HTTP connections."""
        self._http.close()

    def project(
        self, name: str, etag: str | None = None, last_modified: str | None = None
    ) -> IndexPage | None:
        """The project's page (see Upstream.project), asked for with a conditional request."""
        check_name(name)
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
        self._note_version(page.repository_version)
        return IndexPage(
            name=canonical,
            display_name=page.project or name,
            releases=releases(page.packages, page.versions or [], url, HTTP_SCHEMES),
            etag=new_etag,
            last_modified=modified if modified and len(modified) <= LAST_MODIFIED_MAX else None,
        )

    def _note_version(self, declared: str | None) -> None:
        """Say once, as one line, that the index declares a newer minor API version than
        pypi-simple knows (PEP 629: its pages are still read); pypi-simple's own raw warning,
        once per page, is silenced (_quiet_version_warning)."""
        if declared is None or declared in self._declared:
            return
        known = Version(pypi_simple.SUPPORTED_REPOSITORY_VERSION)
        try:
            newer = Version(declared).release[:2] > known.release[:2]
        except InvalidVersion:
            return  # pypi-simple refused the page already
        if newer:
            self._declared.add(declared)
            logger.warning(
                "the upstream %s declares API version %s, newer than the %s this piwheels-ctl "
                "knows: its pages are read as that",
                self.location,
                declared[:20],
                known,
            )

    def serials(self) -> dict[str, int] | None:
        """Every project's last serial from the PEP 691 JSON root listing, or None when the index
        does not offer serials (an HTML root, a JSON root without ``_last-serial``)."""
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
            raise UpstreamError(f"{url}: not a project list we can read: {short(exc)}") from exc
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
        """Fetch the file at ``url`` over HTTP(S) to ``dest`` (see Upstream.download); its size."""
        return save_checked(self._file_chunks(url, limit, seconds), url, dest, sha256)

    def _file_chunks(self, url: str, limit: int, seconds: float) -> Iterator[bytes]:
        if urlsplit(url).scheme not in ("http", "https"):
            raise UpstreamError(f"{url}: an index's files are fetched over HTTP(S) only")
        self._http.check_file_host(url)
        with self._http.get(url, {}, seconds=seconds, limit=limit, what="file") as answer:
            _check_status(url, answer)
            yield from answer.chunks

    def project_names(self) -> Iterator[tuple[str, str]]:
        """Every project of the index as (canonical name, display name), streamed."""
        url = self.location
        seconds = self._timeout * ROOT_TIME_FACTOR
        with self._http.get(url, {"Accept": ACCEPT_ROOT}, seconds=seconds, limit=ROOT_PAGE_MAX) as answer:
            _check_status(url, answer)
            media, charset = _page_type(url, answer, "project list")
            try:
                for display in _index_names(url, media, charset, answer, self._note_version):
                    if NAME_RE.fullmatch(display):
                        yield canonicalize_name(display), display
                    else:
                        logger.warning("%s: ignored %r: not a valid project name", url, display[:100])
            except (ValueError, RecursionError, pypi_simple.UnsupportedRepoVersionError) as exc:
                raise UpstreamError(f"{url}: not a project list we can read: {short(exc)}") from exc


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


def _parse_project(
    url: str, name: str, media: str, charset: str | None, body: bytes
) -> pypi_simple.ProjectPage:
    """The project page parsed by pypi-simple, after the checks that keep hostile pages out of it."""
    _quiet_version_warning()
    try:
        if media == JSON_TYPE:
            return pypi_simple.ProjectPage.from_json_data(_json(body), url)
        for _chunk in check_html(markup_first([body])):
            pass  # checked whole before the parse, which builds a tree
        return pypi_simple.ProjectPage.from_html(
            name, body, base_url=url, from_encoding=charset or HTML_CHARSET
        )
    except (ValueError, RecursionError, pypi_simple.UnsupportedRepoVersionError) as exc:
        raise UpstreamError(f"{url}: not a project page we can read: {short(exc)}") from exc


def _json(body: bytes) -> object:
    """The decoded JSON (a nesting too deep for the decoder raises RecursionError, caught by callers)."""
    return json.loads(body)


def _index_names(
    url: str, media: str, charset: str | None, answer: Answer, note_version: Callable[[str | None], None]
) -> Iterator[str]:
    """The project names of a root listing, as spelled there; HTML is parsed as it streams in.
    ``note_version`` is told the API version the listing declares."""
    _quiet_version_warning()
    if media in HTML_TYPES:
        checker = DepthCheck()
        checked = check_html(markup_first(answer.chunks), checker)
        for link in pypi_simple.parse_links_stream(
            checked, base_url=url, http_charset=charset or HTML_CHARSET
        ):
            note_version(checker.repository_version)
            yield link.text
    else:
        listing = pypi_simple.IndexPage.from_json_data(_json(answer.read()))
        note_version(listing.repository_version)
        yield from listing.projects


def _quiet_version_warning() -> None:
    """Silence pypi-simple's raw warning about a newer minor API version (IndexUpstream says it
    once, as a log line). Put first again before each parse: a caller's warning filters (a test's
    "error") may have been put in front of it since."""
    warnings.filterwarnings("ignore", category=pypi_simple.UnexpectedRepoVersionWarning)
