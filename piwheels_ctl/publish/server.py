"""`piwheels-ctl serve`: the published index over HTTP, read-only, with PEP 691 negotiation."""

from __future__ import annotations

import email.utils
import gzip
import io
import logging
import mimetypes
import os
import re
from collections.abc import Callable
from datetime import timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO
from urllib.parse import parse_qs, unquote, urlsplit

from .. import __version__
from ..errors import ConfigError, InputError
from .negotiation import TEXT_HTML, accepts_gzip, negotiate

log = logging.getLogger(__name__)

IMMUTABLE = "public, max-age=31536000, immutable"
SHORT_LIVED = "max-age=60"


CONTENT_TYPES = {
    ".whl": "application/octet-stream",
    ".metadata": "text/plain; charset=utf-8",
    ".json": "application/json",
    ".html": TEXT_HTML,
}
# ASCII digits only: \d would also take other scripts' digits, which int() accepts.
_RANGE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")
# A position past any file; longer numbers are not handed to int(), which refuses more than
# 4300 digits and would spend time on fewer.
_BEYOND = 10**18
TEXT_PLAIN = "text/plain; charset=utf-8"
# A stored log is at most a few MB (head and tail, log_max_kb); refuse to inflate more than this.
LOG_MAX_INFLATED = 64 * 1024 * 1024
# The listen backlog: a burst of clients (a CI matrix starting) waits to be accepted instead
# of being refused; the default of 5 turned away 45 of 300 simultaneous clients.
BACKLOG = 1024


def parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """The inclusive byte range a single-range ``Range`` header asks for, "unsatisfiable", or
    None when the header is to be ignored (malformed, several ranges)."""
    match = _RANGE.match(header.strip())
    if not match or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":
        suffix = _position(last)
        if suffix == 0 or size == 0:
            return "unsatisfiable"
        return (max(size - suffix, 0), size - 1)
    start = _position(first)
    if last and _position(last) < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return (start, min(_position(last), size - 1) if last else size - 1)


def _position(digits: str) -> int:
    """A byte position from ASCII digits; any number too long for a file size is _BEYOND."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) < len(str(_BEYOND)) else _BEYOND


class _IndexServer(ThreadingHTTPServer):
    """A threading HTTP server that knows the folder it serves."""

    request_queue_size = BACKLOG

    def __init__(self, address: tuple[str, int], www_dir: Path, logs_dir: Path) -> None:
        self.www_dir = www_dir.resolve()
        self.logs_dir = logs_dir.resolve()
        super().__init__(address, IndexRequestHandler)

    def handle_error(self, request: object, client_address: object) -> None:
        """Log a request that failed unexpectedly, instead of printing its traceback to stderr."""
        log.exception("error while answering %s", client_address)


class IndexRequestHandler(BaseHTTPRequestHandler):
    """Serves files below the server's ``www_dir``: GET and HEAD, ranges, validators."""

    server: _IndexServer
    protocol_version = "HTTP/1.1"
    server_version = f"piwheels-ctl/{__version__}"
    # Headers and body go out in separate writes: with Nagle's algorithm the body waits for
    # the client's delayed ACK, ~40 ms on every response of a keep-alive connection.
    disable_nagle_algorithm = True
    # Idle keep-alive connections give their thread back after this many seconds.
    timeout = 30

    def do_GET(self) -> None:
        self._handle(send_body=True)

    def do_HEAD(self) -> None:
        self._handle(send_body=False)

    def _handle(self, *, send_body: bool) -> None:
        url = urlsplit(self.path)
        if url.path.startswith("/logs/"):
            self._handle_log(url.path, send_body=send_body)
            return
        target = self._resolve(url.path)
        if target is None:
            self._respond(HTTPStatus.NOT_FOUND)
            return
        headers: dict[str, str] = {}
        if target.is_dir():
            if not url.path.endswith("/"):
                location = url.path + "/" + (f"?{url.query}" if url.query else "")
                self._respond(HTTPStatus.MOVED_PERMANENTLY, {"Location": location})
                return
            headers["Vary"] = "Accept, User-Agent"
            # PEP 691 writes "?format=application/vnd.pypi.simple.v1+json" unencoded: a media
            # type has no spaces, so "+" is kept rather than read as one.
            wanted = parse_qs(url.query.replace("+", "%2B")).get("format")
            if wanted:
                offer = negotiate(wanted[-1])
            else:
                offer = negotiate(self.headers.get("Accept"), self.headers.get("User-Agent"))
            if offer is None:
                self._respond(HTTPStatus.NOT_ACCEPTABLE, headers)
                return
            # The index file itself may be a symlink: it must stay inside www_dir too.
            target = self._confine(target / offer.filename)
            headers["Content-Type"] = offer.content_type
            headers["Cache-Control"] = SHORT_LIVED
        else:
            headers["Content-Type"] = _content_type(target)
            immutable = target.suffix in (".whl", ".metadata")
            headers["Cache-Control"] = IMMUTABLE if immutable else SHORT_LIVED
        try:
            if target is None or not target.is_file():
                raise FileNotFoundError
            # The publisher may replace or remove the file at any moment: open, then fstat.
            f = open(target, "rb")  # noqa: SIM115 (closed by the with below)
        except OSError:
            self._respond(HTTPStatus.NOT_FOUND, headers)
            return
        with f:
            self._send_file(f, headers, send_body=send_body)

    def _handle_log(self, raw_path: str, *, send_body: bool) -> None:
        """``/logs/<project>/<build>.log``: the stored ``<build>.log.gz`` as text, sent gzipped
        (``Content-Encoding``) to a client that accepts it and inflated for one that does not."""
        parts = [part for part in unquote(raw_path).split("/") if part][1:]
        root = self.server.logs_dir
        target: Path | None = None
        if (
            len(parts) == 2
            and parts[1].endswith(".log")
            and not any(p.startswith(".") or "\\" in p or "\0" in p for p in parts)
        ):
            target = (root / parts[0] / f"{parts[1]}.gz").resolve()
            if root not in target.parents or not target.is_file():
                target = None
        headers = {"Content-Type": TEXT_PLAIN, "Cache-Control": SHORT_LIVED, "Vary": "Accept-Encoding"}
        try:
            if target is None:
                raise FileNotFoundError
            f = open(target, "rb")  # noqa: SIM115 (closed by the with below)
        except OSError:
            self._respond(HTTPStatus.NOT_FOUND, headers)
            return
        with f:
            if accepts_gzip(self.headers.get("Accept-Encoding")):
                headers["Content-Encoding"] = "gzip"
                self._send_file(f, headers, send_body=send_body)
                return
            stat = os.fstat(f.fileno())
            etag = f'"{stat.st_size:x}-{stat.st_mtime_ns:x}-inflated"'
            headers["ETag"] = etag
            headers["Last-Modified"] = email.utils.formatdate(int(stat.st_mtime), usegmt=True)
            if self._not_modified(etag, int(stat.st_mtime)):
                self._respond(HTTPStatus.NOT_MODIFIED, headers)
                return
            try:
                with gzip.GzipFile(fileobj=f) as inflating:
                    text = inflating.read(LOG_MAX_INFLATED)
            except (OSError, EOFError):
                log.warning("stored log %s is not valid gzip", target)
                self._respond(HTTPStatus.NOT_FOUND, {})
                return
            self._respond(HTTPStatus.OK, headers, length=len(text), body=io.BytesIO(text))

    def _resolve(self, raw_path: str) -> Path | None:
        """The path below www_dir that a URL path names, or None if it names nothing there."""
        path = unquote(raw_path)
        if not path.startswith("/") or "\0" in path or "\\" in path:
            return None
        parts = [part for part in path.split("/") if part]
        # Dot-segments and hidden files (the publisher's temp files) are never served.
        if any(part.startswith(".") for part in parts):
            return None
        return self._confine(self.server.www_dir.joinpath(*parts))

    def _confine(self, path: Path) -> Path | None:
        """``path`` with symlinks resolved, if it exists and is inside www_dir."""
        root = self.server.www_dir
        target = path.resolve()
        if target != root and root not in target.parents:
            return None
        return target if target.exists() else None

    def _send_file(self, f: BinaryIO, headers: dict[str, str], *, send_body: bool) -> None:
        stat = os.fstat(f.fileno())
        size = stat.st_size
        etag = f'"{size:x}-{stat.st_mtime_ns:x}"'
        modified = int(stat.st_mtime)
        headers["ETag"] = etag
        headers["Last-Modified"] = email.utils.formatdate(modified, usegmt=True)
        headers["Accept-Ranges"] = "bytes"
        if self._not_modified(etag, modified):
            self._respond(HTTPStatus.NOT_MODIFIED, headers)
            return
        start, end = 0, size - 1
        status = HTTPStatus.OK
        # Range is defined for GET only (RFC 9110 14.2); HEAD describes the whole file.
        wanted = self.headers.get("Range") if send_body else None
        if wanted and self._if_range_holds(etag, modified):
            byte_range = parse_range(wanted, size)
            if byte_range == "unsatisfiable":
                headers["Content-Range"] = f"bytes */{size}"
                self._respond(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, headers)
                return
            if isinstance(byte_range, tuple):
                start, end = byte_range
                status = HTTPStatus.PARTIAL_CONTENT
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = end - start + 1
        self._respond(status, headers, length=length, body=f if send_body else None, offset=start)

    def _not_modified(self, etag: str, modified: int) -> bool:
        if_none_match = self.headers.get("If-None-Match")
        if if_none_match is not None:
            # If-None-Match uses weak comparison and, when present, overrides If-Modified-Since.
            tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
            return "*" in tags or etag in tags
        since = _parse_date(self.headers.get("If-Modified-Since"))
        return since is not None and modified <= since

    def _if_range_holds(self, etag: str, modified: int) -> bool:
        validator = self.headers.get("If-Range")
        if validator is None:
            return True
        validator = validator.strip()
        if validator.startswith(('"', "W/")):
            # If-Range needs a strong match: a weak tag never matches.
            return validator == etag
        return _parse_date(validator) == modified

    def _respond(
        self,
        status: HTTPStatus,
        headers: dict[str, str] | None = None,
        *,
        length: int | None = None,
        body: BinaryIO | None = None,
        offset: int = 0,
    ) -> None:
        """Send status and headers, then ``length`` bytes of ``body`` from ``offset``; log it."""
        headers = dict(headers or {})
        message = b""
        if status >= 400:
            message = f"{status.value} {status.phrase}\n".encode()
            headers["Content-Type"] = TEXT_PLAIN
            headers.pop("Cache-Control", None)
            length = len(message)
        if status != HTTPStatus.NOT_MODIFIED:
            headers["Content-Length"] = str(length or 0)
        self.send_response_only(status)
        self.send_header("Server", self.version_string())
        self.send_header("Date", self.date_time_string())
        self.send_header("X-Content-Type-Options", "nosniff")  # a build log is text, whatever it holds
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        sent = 0
        if self.command != "HEAD":
            try:
                if message:
                    self.wfile.write(message)
                    sent = len(message)
                elif body is not None and length:
                    # sendfile streams from the page cache without copying through Python.
                    sent = self.connection.sendfile(body, offset, length)
            except OSError as exc:
                # The client went away or stalled past the timeout: this connection is done.
                log.debug("sending to %s failed: %s", self.address_string(), exc)
                self.close_connection = True
        self._log(status.value, sent)

    def _log(self, status: int | str, sent: int | str) -> None:
        log.info('%s "%s %s" %s %s', self.address_string(), self.command, self.path, status, sent)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Log the requests http.server answers by itself (malformed ones, unknown methods)."""
        self._log(code.value if isinstance(code, HTTPStatus) else code, size)

    def log_message(self, format: str, *args: object) -> None:
        """Route http.server's own messages to our logger instead of stderr."""
        log.warning("%s %s", self.address_string(), format % args)


def _content_type(path: Path) -> str:
    if path.name == "json":  # a project's data: www/project/<name>/json
        return "application/json"
    known = CONTENT_TYPES.get(path.suffix)
    if known:
        return known
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


def _parse_date(value: str | None) -> int | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp())


def make_server(
    www_dir: Path, host: str = "127.0.0.1", port: int = 8080, logs_dir: Path | None = None
) -> ThreadingHTTPServer:
    """A bound server (not yet serving) for the site in ``www_dir`` on ``host:port``, with the
    build logs of ``logs_dir`` (default: ``logs`` beside ``www_dir``) under ``/logs/``."""
    if not www_dir.is_dir():
        raise InputError(f"index folder {www_dir} does not exist: run 'piwheels-ctl publish'")
    try:
        return _IndexServer((host, port), www_dir, logs_dir or www_dir.parent / "logs")
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def serve(
    www_dir: Path,
    host: str,
    port: int,
    logs_dir: Path | None = None,
    *,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Serve the site in ``www_dir`` on ``host:port`` until interrupted; once the port is bound,
    ``announce`` gets the URL it is reached at."""
    server = make_server(www_dir, host, port, logs_dir)
    bound_host, bound_port = (str(part) for part in server.server_address[:2])
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    if announce is not None:
        announce(f"http://{shown}:{bound_port}/")
    log.info("serving %s on http://%s:%s/", www_dir, shown, bound_port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
