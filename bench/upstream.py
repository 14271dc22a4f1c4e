"""A local upstream for the farm of ``farm.make_farm``: a PEP 691 index on loopback (a thread of
this process) that lists every project with its serial, and answers each project's page with
its ETag (304 when the request names it); ``bump`` changes projects (a new version, serial and
ETag); with ``serials`` off, the root is HTML without serials (conditional requests only)."""

from __future__ import annotations

import contextlib
import functools
import json
import re
import sys
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from farm import NAME, VERSIONS_PER_PROJECT, display_name, project_name

JSON_TYPE = "application/vnd.pypi.simple.v1+json"


class Upstream:
    """Projects 1..``projects`` of the farm, each at serial 1 (as the farm records them)."""

    def __init__(self, projects: int) -> None:
        self.projects = projects
        self.serials = True
        self.serial = [1] * (projects + 1)  # by project id; 0 unused
        self._roots: dict[bool, bytes] = {}
        self.pages = 0  # project pages asked for
        self._server = _Server(("127.0.0.1", 0), functools.partial(_Handler, upstream=self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/simple/"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def bump(self, changed: Iterable[int]) -> None:
        for i in changed:
            self.serial[i] += 1
        self._roots.clear()

    def root(self) -> tuple[str, bytes]:
        if self.serials not in self._roots:
            ids = range(1, self.projects + 1)
            if self.serials:
                entries = ",".join(
                    f'{{"name":"{display_name(i)}","_last-serial":{self.serial[i]}}}' for i in ids
                )
                body = f'{{"meta":{{"api-version":"1.1"}},"projects":[{entries}]}}'
            else:
                links = "".join(f'<a href="{project_name(i)}/">{display_name(i)}</a>\n' for i in ids)
                body = f"<!DOCTYPE html><html><body>\n{links}</body></html>\n"
            self._roots[self.serials] = body.encode()
        return (JSON_TYPE if self.serials else "text/html"), self._roots[self.serials]

    def page(self, i: int) -> bytes:
        """The farm's versions 1.0.. of project ``i``, and a 2.<n> for each bump."""
        versions = [f"1.{v}" for v in range(VERSIONS_PER_PROJECT)]
        versions += [f"2.{s}" for s in range(2, self.serial[i] + 1)]
        files = [
            {
                "filename": f"{display_name(i)}-{v}.tar.gz",
                "url": f"/files/{display_name(i)}-{v}.tar.gz",
                "hashes": {"sha256": "0" * 64},
                "upload-time": "2024-01-01T00:00:00Z",
            }
            for v in versions
        ]
        return json.dumps({"meta": {"api-version": "1.1"}, "name": display_name(i), "files": files}).encode()


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet when a client hangs up (one that wants no HTML root); loud otherwise."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # kept-alive connections, as a real index

    def __init__(self, *args: Any, upstream: Upstream, **kwargs: Any) -> None:
        self.upstream = upstream
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        up = self.upstream
        if self.path == "/simple/":
            content_type, body = up.root()
            return self._send(200, content_type, body)
        parts = self.path.split("/")
        named = re.fullmatch(rf"[a-z0-9]-{re.escape(NAME)}(\d+)", parts[2]) if len(parts) == 4 else None
        i = int(named.group(1)) if named else -1
        if not 1 <= i <= up.projects:
            return self._send(404, "text/plain", b"no such project")
        up.pages += 1
        etag = f'"{up.serial[i]}"'
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return self._send(200, JSON_TYPE, up.page(i), etag)

    def _send(self, status: int, content_type: str, body: bytes, etag: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if etag:
            self.send_header("ETag", etag)
        self.end_headers()
        with contextlib.suppress(BrokenPipeError):  # a client that wants no HTML root hangs up
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""
