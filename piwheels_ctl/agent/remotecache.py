"""A farm's shared compiler cache: ccache's remote storage over HTTP, reached only through the agent.

The master's nginx keeps the cache (WebDAV PUT, ``layout=subdirs``). A build never learns its
URL: ccache inside the sandbox is told that the storage is the relay in front of it
(``storage_env``), and the agent's proxy (``buildnet``) hands each request that is not a proxy
request to a ``Forwarder``, which sends it to the cache under the project's own folder:
GET, HEAD and PUT of a ccache key, one request per connection, with the URL's secret added by
the agent. A hostile build can read and write only its own project's entries: it can poison
no other project's builds. It writes within its quota (megabytes and entries): past it, its PUTs
are refused (507) before they reach the cache, and its ccache keeps its objects locally only.

Shipped to builders with the rest of this folder: stdlib-only, Python 2.7 and 3.4+, type
comments only.

    python remotecache.py check URL     # can this builder use the cache? one JSON line
"""

from __future__ import absolute_import, division, print_function

import base64
import json
import re
import socket
import subprocess
import sys
import threading
import uuid

try:
    from urllib.parse import quote, unquote, urlsplit
except ImportError:  # pragma: no cover - Python 2.7 builders
    from urllib import quote, unquote  # type: ignore[attr-defined, no-redef]

    from urlparse import urlsplit  # type: ignore[import-not-found, no-redef]

try:
    from typing import Any, Dict, List, Optional, Tuple  # noqa: F401 - used in type comments
except ImportError:  # pragma: no cover - Python 2.7/3.4 builders without typing
    pass

# ccache reads remote storage from 4.4 on (as "secondary storage"; "remote storage" from 4.5).
MIN_CCACHE = (4, 4)
# A ccache key as the subdirs layout names it ("/4d/7akuu12p..."): nothing a path could climb out of.
KEY = re.compile(r"^(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)+$")
# An HTTP answer's status line (not a raw bytes literal: Python 2.7 knows only br"").
STATUS = re.compile(b"HTTP/1[.][01] ([0-9]{3}) ")
MAX_ENTRY = 64 << 20  # bytes of one PUT; the master's nginx has the same limit
# The folder of ``check``'s test entry: no project is named so (names start with a letter or digit).
PROBE_FOLDER = "_probe"


def storage_env(port):
    # type: (int) -> Dict[str, str]
    """The variables that point a build's ccache at the relay on ``port`` inside its sandbox."""
    url = "http://127.0.0.1:%d/|layout=subdirs" % port
    return {"CCACHE_REMOTE_STORAGE": url, "CCACHE_SECONDARY_STORAGE": url}  # the 4.4 name too


class Cache(object):
    """Where the cache is: host, port, base path and the Authorization header of its URL."""

    def __init__(self, url):
        # type: (str) -> None
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError("the compiler cache's URL is not an http:// URL")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.base = parts.path.rstrip("/")
        self.auth = None  # type: Optional[str]
        if parts.username is not None:
            pair = "%s:%s" % (unquote(parts.username), unquote(parts.password or ""))
            self.auth = "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")

    def head(self, method, path, length=None):
        # type: (str, str, Optional[int]) -> bytes
        """A request head for ``path`` (below the base) that nothing the build sent goes into."""
        lines = ["%s %s%s HTTP/1.1" % (method, self.base, path), "Host: %s:%d" % (self.host, self.port),
                 "User-Agent: piwheels-ctl-agent", "Connection: close"]  # fmt: skip
        if self.auth:
            lines.append("Authorization: " + self.auth)
        if length is not None:
            lines.append("Content-Length: %d" % length)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def connect(self):
        # type: () -> socket.socket
        return socket.create_connection((self.host, self.port), timeout=30)


class Forwarder(object):
    """Passes a build's ccache requests to the cache, below ``/<project>/`` only, and counts them;
    writes only up to ``quota_mb`` megabytes in ``quota_objects`` entries."""

    def __init__(self, url, project, quota_mb, quota_objects):
        # type: (str, str, int, int) -> None
        self.cache = Cache(url)
        self.prefix = "/" + quote(project.lower(), safe="")
        self.quota_mb = quota_mb
        self.quota_objects = quota_objects
        self.counts = {"get": 0, "found": 0, "put": 0, "stored": 0, "refused": 0,
                       "over_quota": 0}  # type: Dict[str, int]  # fmt: skip
        self._written = 0  # bytes of the PUTs passed to the cache (as they are sent, not as stored)
        self._lock = threading.Lock()  # the proxy serves each connection in a thread of its own

    def _count(self, key, add=1):
        # type: (str, int) -> None
        with self._lock:
            self.counts[key] += add

    def _take_quota(self, length):
        # type: (int) -> bool
        """Whether a PUT of ``length`` bytes fits in what is left of the quota (then counted in)."""
        with self._lock:
            if self._written + length > self.quota_mb << 20 or self.counts["put"] >= self.quota_objects:
                self.counts["over_quota"] += 1
                return False
            self._written += length
            self.counts["put"] += 1
            return True

    def forward(self, client, head, rest):
        # type: (socket.socket, bytes, bytes) -> None
        """Answer the request ``head`` (+ the first bytes of its body, ``rest``) on ``client``."""
        lines = head.decode("latin-1").split("\r\n")
        method, path = (lines[0].split(" ") + ["", ""])[:2]
        headers = dict(_header(line) for line in lines[1:] if ":" in line)
        problem = None  # type: Optional[Tuple[str, str]]
        length = None  # type: Optional[int]
        if method not in ("GET", "HEAD", "PUT"):
            problem = ("405 Method Not Allowed", "%s: only GET, HEAD and PUT" % method)
        elif not KEY.match(path) or "/../" in path + "/" or "/./" in path + "/":
            problem = ("400 Bad Request", "%r: not a ccache key" % path[:100])
        elif method == "PUT":
            if "transfer-encoding" in headers or not headers.get("content-length", "").isdigit():
                problem = ("411 Length Required", "a PUT needs a Content-Length")
            elif int(headers["content-length"]) > MAX_ENTRY:
                problem = ("413 Payload Too Large", "an entry is at most %d bytes" % MAX_ENTRY)
            else:
                length = int(headers["content-length"])
        if problem is not None:
            self._count("refused")
            _answer(client, problem[0], "piwheels-ctl agent: " + problem[1])
            return
        if length is not None and not self._take_quota(length):
            said = "this build's quota of the shared compiler cache is used up (%s)" % self._quota()
            _answer(client, "507 Insufficient Storage", "piwheels-ctl agent: " + said)
            return
        upstream = self.cache.connect()
        try:
            upstream.sendall(self.cache.head(method, self.prefix + path, length))
            if length is not None:
                _copy_body(client, upstream, rest, length)
            status = _pass_back(upstream, client)
        finally:
            upstream.close()
        if method == "PUT":
            self._count("stored", status in (200, 201, 204))
        else:
            self._count("get")
            self._count("found", status == 200)

    def _quota(self):
        # type: () -> str
        return "%d MB, %d objects" % (self.quota_mb, self.quota_objects)

    def summary(self):
        # type: () -> str
        """A line for the build's log: what the shared compiler cache gave and took."""
        counts = self.counts
        line = "shared compiler cache: %(found)d of %(get)d found, %(stored)d of %(put)d stored" % counts
        line += ", %(refused)d refused" % counts if counts["refused"] else ""
        if counts["over_quota"]:
            line += ", %d refused over this build's quota (%s)" % (counts["over_quota"], self._quota())
        return line


def _header(line):
    # type: (str) -> Tuple[str, str]
    name, _, value = line.partition(":")
    return name.strip().lower(), value.strip()


def _copy_body(client, upstream, rest, length):
    # type: (socket.socket, socket.socket, bytes, int) -> None
    """Exactly ``length`` bytes of the body, the first of them in ``rest``: never more."""
    sent = rest[:length]
    upstream.sendall(sent)
    left = length - len(sent)
    while left > 0:
        chunk = client.recv(min(left, 65536))
        if not chunk:
            raise socket.error("the build closed the connection mid-body")
        upstream.sendall(chunk)
        left -= len(chunk)


def _pass_back(upstream, client):
    # type: (socket.socket, socket.socket) -> int
    """Copy the cache's answer to the build until the cache closes; its status code."""
    status = 0
    while True:
        chunk = upstream.recv(65536)
        if not chunk:
            return status
        if not status:
            match = STATUS.match(chunk)
            status = int(match.group(1)) if match else -1
        client.sendall(chunk)


def _answer(sock, status, message):
    # type: (socket.socket, str, str) -> None
    body = (message + "\n").encode("utf-8", "replace")
    head = "HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
    try:
        sock.sendall((head % (status, len(body))).encode("latin-1") + body)
    except socket.error:
        pass


def ccache_version():
    # type: () -> Optional[Tuple[int, ...]]
    """The version of this machine's ccache, or None when there is none."""
    try:
        out = subprocess.check_output(["ccache", "--version"], stderr=subprocess.STDOUT)
    except (OSError, subprocess.CalledProcessError):
        return None
    match = re.search(r"version (\d+)\.(\d+)", out.decode("ascii", "replace"))
    return (int(match.group(1)), int(match.group(2))) if match else None


def _request(cache, method, path, body=None):
    # type: (Cache, str, str, Optional[bytes]) -> Tuple[int, bytes]
    sock = cache.connect()
    try:
        sock.sendall(cache.head(method, path, None if body is None else len(body)) + (body or b""))
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    match = STATUS.match(data)
    return (int(match.group(1)) if match else -1), data.partition(b"\r\n\r\n")[2]


def check(url):
    # type: (str) -> str
    """Whether this builder's ccache can use the cache at ``url``: "on (ccache X.Y)" or "off: why".

    Stores a test entry and reads it back, as the builder (not a build) reaches the cache.
    """
    version = ccache_version()
    if version is None:
        return "off: ccache not installed"
    if version < MIN_CCACHE:
        return "off: ccache %d.%d has no remote storage (4.4 or later)" % version
    try:
        cache = Cache(url)
        path = "/%s/%s" % (PROBE_FOLDER, uuid.uuid4().hex)
        token = uuid.uuid4().hex.encode("ascii")
        stored = _request(cache, "PUT", path, token)[0]
        if stored not in (200, 201, 204):
            return "off: %s: storing answered %d" % (cache.host, stored)
        status, body = _request(cache, "GET", path)
        if status != 200 or body != token:
            return "off: %s: reading back answered %d" % (cache.host, status)
    except (socket.error, ValueError) as exc:
        return "off: %s" % (exc,)
    return "on (ccache %d.%d)" % version


def main(argv):
    # type: (List[str]) -> int
    if len(argv) != 2 or argv[0] != "check":
        sys.stderr.write("usage: remotecache.py check URL\n")
        return 2
    sys.stdout.write(json.dumps({"ccache_remote": check(argv[1])}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
