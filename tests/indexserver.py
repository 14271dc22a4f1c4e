"""Upstreams on loopback: a simple index (PEP 691 JSON, PEP 503 HTML) from a folder, and a hostile one."""

from __future__ import annotations

import contextlib
import email.utils
import functools
import hashlib
import html
import json as jsonlib
import os
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from packaging.utils import canonicalize_name

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPE = "application/vnd.pypi.simple.v1+html"


def split_filename(filename: str) -> tuple[str, str] | None:
    """The project name and version of an sdist or wheel filename as spelled; unvalidated."""
    if filename.endswith(".whl"):
        name, _, rest = filename.partition("-")
        return name, rest.partition("-")[0]
    for suffix in (".tar.gz", ".zip"):
        if filename.endswith(suffix):
            name, _, version = filename[: -len(suffix)].rpartition("-")
            return name, version
    return None


class IndexServer:
    """Serves ``folder``'s sdists and wheels as a simple index, pages made afresh on each request.

    Tests may set ``yanked`` (filename -> reason), ``requires_python`` (filename -> specifier),
    ``canned`` (path -> (status, content type, body), served instead of anything else) and
    ``redirects`` (path -> (status, Location)). Pages carry an ETag (``etags``) and answer a
    matching If-None-Match with 304; with ``last_modified`` they carry a Last-Modified (the
    newest file's time) and answer If-Modified-Since with 304; with ``serials`` the JSON root
    lists each project's ``_last-serial`` (a number that changes whenever its files do); with
    ``json_root`` off the root is HTML only, whatever the pages are.
    """

    def __init__(
        self,
        folder: Path,
        *,
        json: bool = True,
        html: bool = True,
        host: str = "127.0.0.1",
        serials: bool = False,
        etags: bool = True,
        last_modified: bool = False,
        json_root: bool = True,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.folder = folder
        self.tls = tls
        self.host = host
        self.serials = serials
        self.etags = etags
        self.last_modified = last_modified
        self.json_root = json_root
        self.redirects: dict[str, tuple[int, str]] = {}
        self.json = json
        self.html = html
        self.yanked: dict[str, str] = {}
        self.requires_python: dict[str, str] = {}
        self.canned: dict[str, tuple[int, str, bytes]] = {}
        self.requests: list[tuple[str, str, int]] = []
        self.url = ""  # set once serving
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> IndexServer:
        self._httpd = ThreadingHTTPServer((self.host, 0), functools.partial(_Handler, index=self))
        scheme = "http"
        if self.tls is not None:  # HTTPS: the handshake in each request's thread, not the listener's
            self._httpd.socket = self.tls.wrap_socket(
                self._httpd.socket, server_side=True, do_handshake_on_connect=False
            )
            scheme = "https"
        self.url = f"{scheme}://{self.host}:{self._httpd.server_address[1]}/simple/"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._httpd is not None and self._thread is not None
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def record(self, method: str, path: str, status: int) -> None:
        """Note one request and the status it was answered with."""
        with self._lock:
            self.requests.append((method, path, status))

    def pages_fetched(self) -> list[str]:
        """The project pages asked for (answered 200, 304 or 404 alike), by canonical name."""
        with self._lock:
            paths = [path for _, path, _ in self.requests]
        return [p.split("/")[2] for p in paths if p.startswith("/simple/") and p.count("/") == 3]

    def projects(self) -> dict[str, tuple[str, list[tuple[Path, str]]]]:
        """Canonical name -> (name as first spelled, [(file, version)]), from the folder now."""
        found: dict[str, tuple[str, list[tuple[Path, str]]]] = {}
        for path in sorted(self.folder.iterdir()):
            parts = split_filename(path.name)
            if parts is not None:
                name, version = parts
                found.setdefault(canonicalize_name(name), (name, []))[1].append((path, version))
        return dict(sorted(found.items()))

    def negotiate(self, accept: str, *, root: bool = False) -> str:
        """The content type to answer with: the one enabled that the client prefers most."""
        json = self.json and (self.json_root or not root)
        offered = ([JSON_TYPE] if json else []) + ([HTML_TYPE, "text/html"] if self.html or not json else [])
        chosen, best = offered[-1], -1.0
        for item in accept.split(","):
            media, *params = (part.strip() for part in item.split(";"))
            q = next((float(p[2:]) for p in params if p.startswith("q=")), 1.0)
            # A wildcard gets the legacy default, HTML; an exact match wins ties with it.
            candidate = offered[-1] if media == "*/*" else media
            if candidate in offered and q > best and q > 0:
                chosen, best = candidate, q
        return chosen

    def root_page(self, content_type: str) -> bytes:
        """The list of projects."""
        projects = self.projects()
        if content_type == JSON_TYPE:
            names = [
                {"name": display, **({"_last-serial": serial(files)} if self.serials else {})}
                for display, files in projects.values()
            ]
            return _json({"meta": {"api-version": "1.1"}, "projects": names})
        links = "".join(
            f'<a href="/simple/{canonical}/">{html.escape(display)}</a><br>\n'
            for canonical, (display, _) in projects.items()
        )
        return _html("Simple index", links)

    def project_page(self, content_type: str, display: str, files: list[tuple[Path, str]]) -> bytes:
        """One project's page."""
        if content_type == JSON_TYPE:
            return _json(
                {
                    "meta": {"api-version": "1.1"},
                    "name": display,
                    "files": [self._json_file(path) for path, _ in files],
                    "versions": sorted({version for _, version in files}),
                }
            )
        links = "".join(self._html_link(path) for path, _ in files)
        return _html(f"Links for {display}", links)

    def _json_file(self, path: Path) -> dict[str, Any]:
        stat = path.stat()
        uploaded = datetime.fromtimestamp(stat.st_mtime, timezone.utc)
        entry: dict[str, Any] = {
            "filename": path.name,
            "url": f"/files/{path.name}",
            "hashes": {"sha256": hashlib.sha256(path.read_bytes()).hexdigest()},
            "size": stat.st_size,
            "upload-time": uploaded.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "yanked": self.yanked.get(path.name, False),
        }
        if path.name in self.requires_python:
            entry["requires-python"] = self.requires_python[path.name]
        return entry

    def _html_link(self, path: Path) -> str:
        sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        attrs = ""
        if path.name in self.requires_python:
            attrs += f' data-requires-python="{html.escape(self.requires_python[path.name])}"'
        if path.name in self.yanked:
            attrs += f' data-yanked="{html.escape(self.yanked[path.name])}"'
        return f'<a href="/files/{path.name}#sha256={sha256}"{attrs}>{path.name}</a><br>\n'


def serial(files: list[tuple[Path, str]]) -> int:
    """A project's serial, made of its files' names, sizes and times: it changes whenever they
    do (PyPI's grows by one with every change; only whether it changed matters to a sync)."""
    listing = "".join(f"{p.name}\0{p.stat().st_size}\0{p.stat().st_mtime_ns}\n" for p, _ in files)
    return int(hashlib.sha256(listing.encode()).hexdigest()[:12], 16)


def _json(data: object) -> bytes:
    return jsonlib.dumps(data).encode()


def _html(title: str, body: str) -> bytes:
    return (
        '<!DOCTYPE html>\n<html><head><meta name="pypi:repository-version" content="1.0">'
        f"<title>{html.escape(title)}</title></head>\n<body>\n{body}</body></html>\n"
    ).encode()


class _Handler(BaseHTTPRequestHandler):
    """Answers one request from the IndexServer's folder."""

    def __init__(self, *args: Any, index: IndexServer, **kwargs: Any) -> None:
        self.index = index  # set first: the base class handles the request in __init__
        self.head_only = False
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        path = unquote(self.path.split("?", 1)[0])
        if path in self.index.redirects:
            status, location = self.index.redirects[path]
            self.send_response(status)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path in self.index.canned:
            status, content_type, body = self.index.canned[path]
            self._send(status, content_type, body)
        elif path.startswith("/files/"):
            file = self.index.folder / path[len("/files/") :]
            if "/" in path[len("/files/") :] or not file.is_file():
                self.send_error(404)
            else:
                # A file's bytes never change under its name: cached for good, as PyPI says.
                immutable = {"Cache-Control": "max-age=365000000, immutable, public"}
                self._send(200, "application/octet-stream", file.read_bytes(), immutable)
        elif path == "/simple/":
            content_type = self.index.negotiate(self.headers.get("Accept", ""), root=True)
            self._send_page(content_type, self.index.root_page(content_type), self.index.folder.stat())
        elif path.startswith("/simple/") and path.endswith("/") and path.count("/") == 3:
            project = self.index.projects().get(canonicalize_name(path.split("/")[2]))
            if project is None:
                self.send_error(404)
                return
            content_type = self.index.negotiate(self.headers.get("Accept", ""))
            newest = max((path.stat() for path, _ in project[1]), key=lambda s: s.st_mtime)
            self._send_page(content_type, self.index.project_page(content_type, *project), newest)
        else:
            self.send_error(404)

    def do_HEAD(self) -> None:
        """As GET, without the body (uv asks a wheel's size and range support this way)."""
        self.head_only = True
        self.do_GET()

    def _send_page(self, content_type: str, body: bytes, newest: os.stat_result) -> None:
        """Send a page, or 304 when the client already holds this very page."""
        headers = {"Vary": "Accept"}
        if self.index.etags:
            headers["ETag"] = '"' + hashlib.sha256(content_type.encode() + body).hexdigest()[:32] + '"'
        if self.index.last_modified:
            headers["Last-Modified"] = email.utils.formatdate(newest.st_mtime, usegmt=True)
        since = self.headers.get("If-Modified-Since")
        if ("ETag" in headers and self.headers.get("If-None-Match") == headers["ETag"]) or (
            since
            and "Last-Modified" in headers
            and email.utils.parsedate_to_datetime(since).timestamp() >= int(newest.st_mtime)
        ):
            self.send_response(304)
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
        else:
            self._send(200, content_type, body, headers)

    def _send(
        self, status: int, content_type: str, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not self.head_only:
            self.wfile.write(body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.index.record(self.command, self.path, int(code))

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output clean: requests are recorded in IndexServer.requests instead."""


# What the server does with each connection, given the request's path: a function that
# writes (or does not write) to the socket.
Behaviour = Callable[[socket.socket, str], None]


def response_bytes(body: bytes, content_type: str, *, length: int | None = None) -> bytes:
    """A whole HTTP/1.1 response with ``body``; ``length`` overrides the Content-Length sent."""
    head = (
        "HTTP/1.1 200 OK\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


def trickle(data: bytes, interval: float = 1.0) -> Behaviour:
    """Send ``data`` one byte every ``interval`` seconds, headers included."""

    def behave(sock: socket.socket, _path: str) -> None:
        for byte in data:
            sock.sendall(bytes([byte]))
            time.sleep(interval)

    return behave


def send_then_close(data: bytes) -> Behaviour:
    """Send ``data`` (a response cut short, say) and hang up."""

    def behave(sock: socket.socket, _path: str) -> None:
        sock.sendall(data)

    return behave


def flood(content_type: str, chunk: bytes, total: int, *, declare: bool) -> Behaviour:
    """Send ``total`` bytes of ``chunk`` repeated, with a truthful Content-Length or none at all."""

    def behave(sock: socket.socket, _path: str) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nConnection: close\r\n"
        if declare:
            head += f"Content-Length: {total}\r\n"
        sock.sendall(head.encode() + b"\r\n")
        sent = 0
        block = chunk * max(1, 65536 // len(chunk))
        while sent < total:
            piece = block[: total - sent]
            sock.sendall(piece)
            sent += len(piece)

    return behave


class HostileServer:
    """Answers every request on 127.0.0.1 with ``behaviour``; ``url`` is its /simple/ URL."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.url = ""
        self.connections = 0
        self._server: socketserver.ThreadingTCPServer | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> HostileServer:
        hostile = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                hostile.connections += 1
                sock: socket.socket = self.request
                request = b""
                while b"\r\n\r\n" not in request:
                    data = sock.recv(4096)
                    if not data:
                        return
                    request += data
                path = request.split(b" ", 2)[1].decode("latin-1")
                with contextlib.suppress(OSError):  # the client gave up, as it should
                    hostile.behaviour(sock, path)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/simple/"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
