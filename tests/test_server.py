"""`piwheels-ctl serve`: negotiation, conditional and range requests, path safety, logging."""

from __future__ import annotations

import http.client
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import pytest
import requests
from pypi_simple import ACCEPT_ANY, ACCEPT_HTML_ONLY, ACCEPT_JSON_ONLY, ACCEPT_JSON_PREFERRED

from piwheels_ctl.errors import ConfigError, InputError
from piwheels_ctl.publish.negotiation import HTML_V1, JSON_V1, negotiate
from piwheels_ctl.publish.server import make_server, parse_range

from helpers import serving

WHEEL = "foo-1.0-py3-none-any.whl"
WHEEL_DATA = bytes(range(256)) * 1000  # 256000 bytes, every offset identifiable
ROOT_HTML = b"<!DOCTYPE html><html><body><a href='foo/'>foo</a></body></html>\n"
ROOT_JSON = b'{"meta":{"api-version":"1.1"},"projects":[{"name":"foo"}]}'
FOO_HTML = f"<!DOCTYPE html><html><body><a href='{WHEEL}'>{WHEEL}</a></body></html>\n".encode()
FOO_JSON = b'{"files":[],"meta":{"api-version":"1.1"},"name":"foo","versions":[]}'
MTIME = 1_700_000_000


@pytest.fixture
def www(tmp_path: Path) -> Path:
    """A published tree by hand, a secret next to it and links that try to escape."""
    www = tmp_path / "www"
    foo = www / "simple" / "foo"
    foo.mkdir(parents=True)
    files = {
        www / "simple" / "index.html": ROOT_HTML,
        www / "simple" / "index.json": ROOT_JSON,
        foo / "index.html": FOO_HTML,
        foo / "index.json": FOO_JSON,
        foo / WHEEL: WHEEL_DATA,
        foo / f"{WHEEL}.metadata": "Name: foo\nAuthor: Zoë\n".encode(),
        foo / ".index.html.abc.tmp": b"half written",
        www / "stats.html": b"<p>stats</p>",
    }
    for path, data in files.items():
        path.write_bytes(data)
        os.utime(path, (MTIME, MTIME))
    (tmp_path / "secret.txt").write_text("secret")
    (foo / "escape.whl").symlink_to(tmp_path / "secret.txt")
    (www / "simple" / "outside").symlink_to(tmp_path)
    (www / "simple" / "bar").mkdir()  # a project folder without pages
    return www


@pytest.fixture
def base(www: Path) -> Iterator[str]:
    with serving(www) as url:
        yield url


def get(url: str, **headers: str) -> requests.Response:
    return requests.get(url, headers=headers, timeout=10, allow_redirects=False)


def raw(base: str, method: str, path: str) -> http.client.HTTPResponse:
    """A request sent with its path exactly as given (requests would normalise dot-segments)."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        response.read()
        return response
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "text/html"),
        ("", "text/html"),
        ("*/*", "text/html"),
        ("text/*", "text/html"),
        (ACCEPT_ANY, JSON_V1),
        (ACCEPT_JSON_PREFERRED, JSON_V1),
        (ACCEPT_HTML_ONLY, HTML_V1),
        (f"{JSON_V1};q=0.5, text/html;q=0.9", "text/html"),
        (f"{HTML_V1}, {JSON_V1}", HTML_V1),
        (f"{JSON_V1}, {HTML_V1}", JSON_V1),
        ("application/vnd.pypi.simple.latest+json", "application/vnd.pypi.simple.latest+json"),
        ("text/html;q=0, */*", HTML_V1),
        (f"{JSON_V1};q=0, application/*", HTML_V1),
        ("application/json", None),
        ("text/html;q=0", None),
        ("text/html;q=bogus", None),
    ],
)
def test_negotiate(accept: str | None, expected: str | None) -> None:
    offer = negotiate(accept)
    assert (offer.media_type if offer else None) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-9", (0, 9)),
        ("bytes=10-", (10, 99)),
        ("bytes=-5", (95, 99)),
        ("bytes=-500", (0, 99)),
        ("bytes=90-1000", (90, 99)),
        ("bytes=100-", "unsatisfiable"),
        ("bytes=-0", "unsatisfiable"),
        ("bytes=5-1", None),
        ("bytes=0-1,5-6", None),
        ("items=0-1", None),
        ("bytes=-", None),
    ],
)
def test_parse_range(header: str, expected: object) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize(
    ("accept", "content_type", "body"),
    [
        (None, "text/html; charset=utf-8", FOO_HTML),
        ("*/*", "text/html; charset=utf-8", FOO_HTML),
        (ACCEPT_JSON_ONLY, JSON_V1, FOO_JSON),
        (ACCEPT_HTML_ONLY, HTML_V1, FOO_HTML),
        (f"{JSON_V1};q=0.2, {HTML_V1};q=0.8", HTML_V1, FOO_HTML),
        (f"{JSON_V1};q=0.8, {HTML_V1};q=0.2", JSON_V1, FOO_JSON),
    ],
)
def test_project_page_negotiation(base: str, accept: str | None, content_type: str, body: bytes) -> None:
    response = get(f"{base}/simple/foo/", **({"Accept": accept} if accept else {}))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == content_type
    assert response.headers["Vary"] == "Accept, User-Agent"
    assert response.headers["Cache-Control"] == "max-age=60"
    assert response.content == body


# What pip sends, every version since 22.2: JSON first, HTML accepted.
PIP_ACCEPT = f"{JSON_V1}, {HTML_V1}; q=0.1, text/html; q=0.01"


@pytest.mark.parametrize(
    ("user_agent", "content_type"),
    [
        ('pip/23.0.1 {"installer":{"name":"pip","version":"23.0.1"}}', HTML_V1),  # Debian bookworm's
        ("pip/22.3.1 {}", HTML_V1),
        ("pip/23.1.2 {}", HTML_V1),
        ("pip/23.2 {}", JSON_V1),  # reads PEP 714's "core-metadata"
        ("pip/24.0 {}", JSON_V1),
        ("pip/230.1 {}", JSON_V1),
        ("uv/0.13.9", JSON_V1),
    ],
)
def test_pips_that_misread_json_metadata_get_html(base: str, user_agent: str, content_type: str) -> None:
    response = get(f"{base}/simple/foo/", Accept=PIP_ACCEPT, **{"User-Agent": user_agent})
    assert response.headers["Content-Type"] == content_type, (user_agent, response.headers)
    assert response.headers["Vary"] == "Accept, User-Agent"
    # An explicit ?format= is what the client asked for, whoever it is.
    explicit = get(f"{base}/simple/foo/?format={JSON_V1}", **{"User-Agent": user_agent})
    assert explicit.headers["Content-Type"] == JSON_V1


def test_root_negotiation(base: str) -> None:
    assert get(f"{base}/simple/", Accept=ACCEPT_JSON_ONLY).content == ROOT_JSON
    assert get(f"{base}/simple/", Accept="text/html").content == ROOT_HTML


def test_not_acceptable(base: str) -> None:
    response = get(f"{base}/simple/foo/", Accept="application/json")
    assert response.status_code == 406
    assert response.headers["Vary"] == "Accept, User-Agent"


def test_format_query_overrides_accept(base: str) -> None:
    response = get(f"{base}/simple/foo/?format={JSON_V1}", Accept="text/html")
    assert response.headers["Content-Type"] == JSON_V1
    assert response.content == FOO_JSON
    response = get(f"{base}/simple/foo/?format=application/vnd.pypi.simple.v1%2Bhtml")
    assert response.headers["Content-Type"] == HTML_V1
    assert get(f"{base}/simple/foo/?format=application/xml").status_code == 406


def test_directory_without_slash_redirects(base: str) -> None:
    response = get(f"{base}/simple/foo")
    assert response.status_code == 301
    assert response.headers["Location"] == "/simple/foo/"
    response = get(f"{base}/simple/foo?format={JSON_V1}")
    assert response.headers["Location"] == f"/simple/foo/?format={JSON_V1}"


def test_file_types_and_caching(base: str) -> None:
    wheel = get(f"{base}/simple/foo/{WHEEL}")
    assert wheel.content == WHEEL_DATA
    assert wheel.headers["Content-Type"] == "application/octet-stream"
    assert wheel.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert wheel.headers["Accept-Ranges"] == "bytes"
    metadata = get(f"{base}/simple/foo/{WHEEL}.metadata")
    assert metadata.content == "Name: foo\nAuthor: Zoë\n".encode()
    assert metadata.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert metadata.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    page = get(f"{base}/simple/foo/index.json")
    assert page.headers["Content-Type"] == "application/json"
    assert page.headers["Cache-Control"] == "max-age=60"
    assert get(f"{base}/stats.html").headers["Content-Type"] == "text/html; charset=utf-8"


def test_head_sends_headers_only(base: str) -> None:
    with requests.Session() as session:
        wheel = session.head(f"{base}/simple/foo/{WHEEL}", headers={"Range": "bytes=0-9"})
        assert wheel.status_code == 200  # Range applies to GET only
        assert wheel.headers["Content-Length"] == str(len(WHEEL_DATA))
        assert wheel.content == b""
        page = session.head(f"{base}/simple/foo/", headers={"Accept": ACCEPT_JSON_ONLY})
        assert page.headers["Content-Type"] == JSON_V1
        assert page.headers["Content-Length"] == str(len(FOO_JSON))
        # The kept-alive connection is still in step after bodiless responses.
        assert session.get(f"{base}/simple/foo/", headers={"Accept": ACCEPT_JSON_ONLY}).content == (FOO_JSON)


def test_ranges(base: str) -> None:
    url = f"{base}/simple/foo/{WHEEL}"
    size = len(WHEEL_DATA)
    first = get(url, Range="bytes=0-9")
    assert first.status_code == 206
    assert first.content == WHEEL_DATA[:10]
    assert first.headers["Content-Range"] == f"bytes 0-9/{size}"
    assert first.headers["Content-Length"] == "10"
    middle = get(url, Range="bytes=1000-")
    assert middle.content == WHEEL_DATA[1000:]
    assert middle.headers["Content-Range"] == f"bytes 1000-{size - 1}/{size}"
    suffix = get(url, Range="bytes=-300")
    assert suffix.status_code == 206
    assert suffix.content == WHEEL_DATA[-300:]
    beyond = get(url, Range=f"bytes={size}-")
    assert beyond.status_code == 416
    assert beyond.headers["Content-Range"] == f"bytes */{size}"
    several = get(url, Range="bytes=0-1,5-6")
    assert several.status_code == 200
    assert several.content == WHEEL_DATA


def test_if_range(base: str) -> None:
    url = f"{base}/simple/foo/{WHEEL}"
    full = get(url)
    etag, modified = full.headers["ETag"], full.headers["Last-Modified"]
    assert get(url, Range="bytes=0-9", **{"If-Range": etag}).status_code == 206
    stale = get(url, Range="bytes=0-9", **{"If-Range": '"0-0"'})
    assert stale.status_code == 200
    assert stale.content == WHEEL_DATA
    assert get(url, Range="bytes=0-9", **{"If-Range": f"W/{etag}"}).status_code == 200
    assert get(url, Range="bytes=0-9", **{"If-Range": modified}).status_code == 206
    older = formatdate(MTIME - 60, usegmt=True)
    assert get(url, Range="bytes=0-9", **{"If-Range": older}).status_code == 200


def test_etag_and_last_modified(base: str, www: Path) -> None:
    url = f"{base}/simple/foo/"
    first = get(url, Accept=ACCEPT_JSON_ONLY)
    etag = first.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    assert first.headers["Last-Modified"] == formatdate(MTIME, usegmt=True)
    html_etag = get(url).headers["ETag"]
    assert html_etag != etag  # each representation has its own validator

    cached = get(url, Accept=ACCEPT_JSON_ONLY, **{"If-None-Match": etag})
    assert cached.status_code == 304
    assert cached.content == b""
    assert cached.headers["ETag"] == etag
    assert get(url, Accept=ACCEPT_JSON_ONLY, **{"If-None-Match": f'"x", W/{etag}'}).status_code == 304
    assert get(url, Accept=ACCEPT_JSON_ONLY, **{"If-None-Match": "*"}).status_code == 304
    assert get(url, Accept=ACCEPT_JSON_ONLY, **{"If-None-Match": html_etag}).status_code == 200

    since = first.headers["Last-Modified"]
    assert get(url, **{"If-Modified-Since": since}).status_code == 304
    later = formatdate(MTIME + 3600, usegmt=True)
    assert get(url, **{"If-Modified-Since": later}).status_code == 304
    earlier = formatdate(MTIME - 1, usegmt=True)
    assert get(url, **{"If-Modified-Since": earlier}).status_code == 200
    assert get(url, **{"If-Modified-Since": "not a date"}).status_code == 200
    # If-None-Match wins over If-Modified-Since.
    mismatch = {"If-None-Match": '"other"', "If-Modified-Since": since}
    assert get(url, **mismatch).status_code == 200

    # A republished page gets a new validator.
    (www / "simple" / "foo" / "index.json").write_bytes(FOO_JSON + b" ")
    changed = get(url, Accept=ACCEPT_JSON_ONLY, **{"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["ETag"] != etag


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/simple/../../secret.txt",
        "/simple/%2e%2e/%2e%2e/secret.txt",
        "/simple/%2E%2E%2F%2E%2E%2Fsecret.txt",
        "/simple/foo/..%2f..%2f..%2fsecret.txt",
        "/simple/%252e%252e/%252e%252e/secret.txt",
        "/simple/foo/escape.whl",
        "/simple/outside/secret.txt",
        "/simple/foo/.index.html.abc.tmp",
        "/simple/foo/%00index.html",
        "/simple/foo\\..\\..\\secret.txt",
        "/simple/missing/",
        "/simple/bar/",
        "/nothing.whl",
        "//etc/passwd",
        "http://127.0.0.1/../secret.txt",
    ],
)
def test_paths_outside_or_missing_are_404(base: str, path: str) -> None:
    for method in ("GET", "HEAD"):
        response = raw(base, method, path)
        assert response.status == 404, (method, path)


def test_requests_are_logged(
    base: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.INFO, logger="piwheels_ctl.publish.server")
    get(f"{base}/simple/foo/{WHEEL}.metadata")
    get(f"{base}/simple/foo/{WHEEL}", Range="bytes=0-9")
    get(f"{base}/simple/nothing/")
    raw(base, "DELETE", "/simple/")
    # The server logs after the response has gone out, each connection in its own thread: give
    # the threads a moment, and take the lines in whatever order they came.
    deadline = time.monotonic() + 10
    while len(caplog.records) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    lines = sorted(r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    metadata_size = len("Name: foo\nAuthor: Zoë\n".encode())
    assert lines == sorted(
        [
            f'127.0.0.1 "GET /simple/foo/{WHEEL}.metadata" 200 {metadata_size}',
            f'127.0.0.1 "GET /simple/foo/{WHEEL}" 206 10',
            '127.0.0.1 "GET /simple/nothing/" 404 14',
            '127.0.0.1 "DELETE /simple/" 501 -',
        ]
    ), lines
    # Nothing goes to stderr the way http.server does by default.
    assert capsys.readouterr().err == ""


def test_make_server_errors(www: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="missing"):
        make_server(tmp_path / "missing")
    taken = make_server(www, "127.0.0.1", 0)
    try:
        with pytest.raises(ConfigError, match=f"127.0.0.1:{taken.server_address[1]}"):
            make_server(www, "127.0.0.1", taken.server_address[1])
    finally:
        taken.server_close()


def test_serve_until_interrupted(www: Path) -> None:
    # Ctrl-C as a terminal sends it: the server as a user starts it, whatever this test process
    # inherited (SIGINT ignored by a shell's background job, or blocked) and passed on.
    code = (
        "import logging, signal, sys; from pathlib import Path; "
        "from piwheels_ctl.publish.server import serve; "
        "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); "
        "signal.signal(signal.SIGINT, signal.default_int_handler); "
        "logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='%(message)s'); "
        "serve(Path(sys.argv[1]), '127.0.0.1', 0)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(www)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith(f"serving {www} on http://127.0.0.1:"), first
        url = first.split(" on ")[1].strip()
        assert requests.get(url + "simple/", timeout=10).content == ROOT_HTML
        # The log line is written after the response is sent: wait for it before stopping.
        assert '"GET /simple/" 200' in proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def _request(sock: socket.socket, request: bytes) -> bytes:
    """Send ``request`` and read the answer until the server closes the connection."""
    sock.sendall(request)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    ("header", "status", "content_range"),
    [
        ("bytes=" + "9" * 5000 + "-", 416, f"bytes */{len(WHEEL_DATA)}"),
        ("bytes=" + "9" * 5000 + "-" + "9" * 5001, 416, f"bytes */{len(WHEEL_DATA)}"),
        # A last position or suffix beyond the file means "to the end" (RFC 9110 14.1.2).
        ("bytes=0-" + "9" * 5000, 206, f"bytes 0-{len(WHEEL_DATA) - 1}/{len(WHEEL_DATA)}"),
        ("bytes=-" + "9" * 5000, 206, f"bytes 0-{len(WHEEL_DATA) - 1}/{len(WHEEL_DATA)}"),
        ("bytes=" + "0" * 5000 + "5-" + "0" * 5000 + "9", 206, f"bytes 5-9/{len(WHEEL_DATA)}"),
    ],
    ids=["huge-start", "huge-both", "huge-end", "huge-suffix", "leading-zeros"],
)
def test_range_with_a_5000_digit_number(base: str, header: str, status: int, content_range: str) -> None:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", f"/simple/foo/{WHEEL}", headers={"Range": header})
        response = conn.getresponse()
        body = response.read()
        assert response.status == status, f"{response.status} {body[:200]!r}"
        assert response.getheader("Content-Range") == content_range
        # The connection survived: a second request on it is answered.
        conn.request("GET", "/simple/")
        again = conn.getresponse()
        assert (again.status, again.read()) == (200, ROOT_HTML)
    finally:
        conn.close()


def _listen_queue(port: int) -> tuple[int, int]:
    """The kernel's view of a listening socket: connections waiting to be accepted, backlog."""
    proc = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True, timeout=30
    )
    fields = proc.stdout.split()
    assert fields and fields[0] == "LISTEN", f"ss shows no listener on port {port}: {proc.stdout!r}"
    return int(fields[1]), int(fields[2])


def test_a_burst_of_300_clients_is_queued_and_answered(www: Path) -> None:
    clients = 300
    server = make_server(www, "127.0.0.1", 0)
    port = server.server_address[1]
    sockets: list[socket.socket] = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    try:
        assert _listen_queue(port)[1] >= 128, f"listen backlog {_listen_queue(port)[1]}"
        # All of them connect before the server accepts any: the backlog must hold them.
        for _ in range(clients):
            sock = socket.socket()
            sock.settimeout(60)
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            sockets.append(sock)
        deadline = time.monotonic() + 60
        while (queued := _listen_queue(port)[0]) < clients and time.monotonic() < deadline:
            time.sleep(0.1)
        assert queued == clients, f"{queued} of {clients} connections queued for accept"
        thread.start()
        answers = []
        for sock in sockets:
            sock.setblocking(True)
            sock.settimeout(60)
            answers.append(_request(sock, b"GET /simple/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
        ok = sum(a.startswith(b"HTTP/1.1 200 ") and a.endswith(ROOT_HTML) for a in answers)
        assert ok == clients, f"{ok} of {clients} clients got the page; first other: {answers[0][:100]!r}"
    finally:
        for sock in sockets:
            sock.close()
        if thread.is_alive():
            server.shutdown()
            thread.join()
        server.server_close()
