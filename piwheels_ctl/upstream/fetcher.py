"""GETs to the upstream index, each bounded: in time as a whole, in size, and in where it may redirect.

``requests`` bounds each socket operation, not a request: a server sending one byte a second
never trips a read timeout. Here every request has a deadline; when it passes, a timer shuts
the request's socket, which wakes any blocked read (headers, TLS handshake or body alike).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager

from .. import __version__
from ..agent import netranges
from ..agent.buildenv import tls_message, trust_store
from ..errors import UpstreamError

MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})
CHUNK = 64 * 1024


class _Watch:
    """The sockets of one request in flight; all shut at once when its time is up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.expired = False

    def attach(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    with suppress(OSError):  # already closed: nothing left to wake
        sock.shutdown(socket.SHUT_RDWR)


# The watch of the request this thread is making: connections are opened and used in the
# thread that asked for them, so they find it here.
_current = threading.local()


def _attach(sock: socket.socket | None) -> None:
    watch: _Watch | None = getattr(_current, "watch", None)
    if watch is not None and sock is not None:
        watch.attach(sock)


class _WatchedConnection(HTTPConnection):
    """An HTTP connection whose socket, new or reused, joins the watch of the request using it."""

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _attach(sock)  # before a TLS handshake, which a slow server could drag out too
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach(self.sock)  # a kept-alive connection, reused
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(_WatchedConnection, HTTPSConnection):
    """The same for HTTPS."""


class _Pool(HTTPConnectionPool):
    ConnectionCls = _WatchedConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


def _watched(manager: PoolManager) -> PoolManager:
    manager.pool_classes_by_scheme = {"http": _Pool, "https": _HTTPSPool}
    return manager


class _Adapter(HTTPAdapter):
    """requests' adapter, making its connections through the watched pools."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _watched(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> PoolManager:
        return _watched(super().proxy_manager_for(proxy, **kwargs))


@dataclass(frozen=True)
class Answer:
    """A response's status line and headers; the body is read from ``chunks``."""

    url: str  # after redirects
    status: int
    reason: str
    headers: Mapping[str, str]  # case-insensitive
    chunks: Iterator[bytes]

    @property
    def content_type(self) -> tuple[str, str | None]:
        """The media type (lower case, "" when none was sent) and the charset parameter."""
        media, *params = (part.strip() for part in self.headers.get("Content-Type", "").split(";"))
        charset = next(
            (p.split("=", 1)[1].strip('"') for p in params if p.lower().startswith("charset=")), None
        )
        return media.lower(), charset

    def read(self) -> bytes:
        """The whole body (within the limits the answer was opened with)."""
        return b"".join(self.chunks)


class Fetcher:
    """Bounded GETs: ``seconds`` for a whole request, ``limit`` bytes of body, redirects to known hosts."""

    def __init__(
        self, origin: str, redirect_hosts: frozenset[str] = frozenset(), *, connections: int = 10
    ) -> None:
        self._hosts = redirect_hosts | {(urlsplit(origin).hostname or "").lower()}
        self._session = requests.Session()
        self._session.headers["User-Agent"] = f"piwheels-ctl/{__version__}"
        self.trust = controller_trust_store()
        # Kept-alive connections per host: as many as the threads that fetch at once.
        adapter = _Adapter(pool_connections=connections, pool_maxsize=connections)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def close(self) -> None:
        self._session.close()

    def check_file_host(self, url: str) -> None:
        """UpstreamError unless ``url`` is on the index's host, a configured one, or a public
        address: a hostile page must not send the controller to this machine or its network
        (``netranges.reaches_no_network_of_ours``)."""
        host = (urlsplit(url).hostname or "").lower()
        if host in self._hosts:
            return
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}
        except (socket.gaierror, UnicodeError) as exc:
            raise UpstreamError(f"{url}: cannot resolve {host!r}: {exc}") from None
        for address in sorted(addresses):
            if not netranges.reaches_no_network_of_ours(str(address)):
                raise UpstreamError(
                    f"{url}: {host} is at {address}, not a public address "
                    "(allow it with the upstream_redirect_hosts setting)"
                )

    @contextmanager
    def get(
        self, url: str, headers: Mapping[str, str], *, seconds: float, limit: int, what: str = "page"
    ) -> Iterator[Answer]:
        """GET ``url``; every failure to get a whole answer in time becomes UpstreamError naming it."""
        watch = _Watch()
        timer = threading.Timer(seconds, watch.expire)
        timer.daemon = True
        deadline = time.monotonic() + seconds
        _current.watch = watch
        timer.start()
        response: requests.Response | None = None
        try:
            response = self._follow(url, headers, seconds, watch)
            if watch.expired:  # headers cut short at the deadline can parse as complete ones
                raise UpstreamError(f"{url}: timed out: no whole answer within {seconds:g} s (http_timeout)")
            yield Answer(
                url=response.url,
                status=response.status_code,
                reason=response.reason or "",
                headers=response.headers,
                chunks=self._chunks(response, deadline, limit, seconds, watch, what),
            )
        finally:
            timer.cancel()
            _current.watch = None
            if response is not None:
                response.close()

    def _follow(
        self, url: str, headers: Mapping[str, str], seconds: float, watch: _Watch
    ) -> requests.Response:
        """The answer to ``url`` after same-host (or allowed) redirects."""
        for _ in range(MAX_REDIRECTS + 1):
            try:
                response = self._session.get(
                    url,
                    headers=dict(headers),
                    timeout=(seconds, seconds),
                    stream=True,
                    allow_redirects=False,
                    verify=self.trust,  # given here: REQUESTS_CA_BUNDLE and the like would win otherwise
                )
            except requests.exceptions.SSLError as exc:
                raise UpstreamError(f"{url}: {tls_failure(url, exc, self.trust)}") from exc
            except requests.RequestException as exc:
                raise UpstreamError(
                    f"{url}: {_failure(exc, watch, seconds, 'the upstream did not answer')}"
                ) from exc
            location = response.headers.get("Location")
            if response.status_code not in REDIRECTS or not location:
                return response
            response.close()
            target = urljoin(url, location)
            parts, before = urlsplit(target), urlsplit(url)
            host = (parts.hostname or "").lower()
            if parts.scheme not in ("http", "https") or host not in self._hosts:
                raise UpstreamError(
                    f"{url}: refused a redirect to {target}: another host "
                    "(allow it with the upstream_redirect_hosts setting)"
                )
            if before.scheme == "https" and parts.scheme != "https":
                raise UpstreamError(f"{url}: refused a redirect from HTTPS to {target}")
            url = target
        raise UpstreamError(f"{url}: more than {MAX_REDIRECTS} redirects")

    @staticmethod
    def _chunks(
        response: requests.Response, deadline: float, limit: int, seconds: float, watch: _Watch, what: str
    ) -> Iterator[bytes]:
        url = response.url
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise UpstreamError(
                f"{url}: the {what} is larger than the {limit:,} bytes allowed ({int(declared):,})"
            )
        size = 0
        try:
            for chunk in response.iter_content(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise UpstreamError(f"{url}: the {what} is larger than the {limit:,} bytes allowed")
                if time.monotonic() > deadline:
                    watch.expire()
                    raise UpstreamError(
                        f"{url}: timed out: no whole {what} within {seconds:g} s (http_timeout)"
                    )
                yield chunk
        except requests.RequestException as exc:
            raise UpstreamError(f"{url}: {_failure(exc, watch, seconds, f'the {what} broke off')}") from exc
        if watch.expired:  # shut at the deadline, so the end seen was not the page's end
            raise UpstreamError(f"{url}: timed out: no whole {what} within {seconds:g} s (http_timeout)")


def controller_trust_store() -> str:
    """The CA file the controller trusts, the one its builds trust (``SSL_CERT_FILE``, else the
    system's store), and certifi's bundle only on a machine without either."""
    store = trust_store()
    if store is not None:
        return store
    import certifi  # requests' own dependency

    return str(certifi.where())


def tls_failure(url: str, exc: Exception, store: str) -> str:
    """What a failed TLS handshake says: that it is one, with which host, against which store."""
    reason = str(exc)
    for marker in ("certificate verify failed: ", "SSLError(", "SSL: "):
        if marker in reason:
            reason = reason.split(marker, 1)[1].split("'))", 1)[0].split('")', 1)[0].rstrip(")")
            break
    return tls_message(str(urlsplit(url).hostname), reason, store)


def _failure(exc: requests.RequestException, watch: _Watch, seconds: float, what: str) -> str:
    """Why a request failed: its deadline passing (which shuts the socket), or what requests says."""
    if watch.expired:
        return f"timed out: no whole answer within {seconds:g} s (http_timeout)"
    return f"{what}: {exc}"
