"""The upstream reader against a real local index over HTTP, and against a folder."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from piwheels_ctl.errors import InputError, UpstreamError
from piwheels_ctl.upstream.index import ACCEPT_PROJECT, ACCEPT_ROOT
from piwheels_ctl.upstream.page import IndexPage, IndexRelease, WheelLink
from piwheels_ctl.upstream.source import Upstream, open_upstream

from indexserver import HTML_TYPE, JSON_TYPE, IndexServer

# Each file's modification time: the index reports it as its upload time.
FILES = {
    "demo-1.0.tar.gz": datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
    "demo-1.0.zip": datetime(2024, 1, 2, 3, 0, 0, tzinfo=timezone.utc),
    "demo-1.0-py3-none-any.whl": datetime(2024, 1, 3, tzinfo=timezone.utc),
    "demo-1.1-py3-none-any.whl": datetime(2024, 2, 1, tzinfo=timezone.utc),
    "demo-2.0.zip": datetime(2024, 3, 1, tzinfo=timezone.utc),
    "demo-10.0.tar.gz": datetime(2024, 4, 1, tzinfo=timezone.utc),
    "demo-1.0.foo.tar.gz": datetime(2024, 5, 1, tzinfo=timezone.utc),  # not a PEP 440 version
    "Other_Pkg-0.1.tar.gz": datetime(2024, 6, 1, tzinfo=timezone.utc),
}


def add_file(folder: Path, filename: str, when: datetime) -> Path:
    """Write a small fake distribution file with the given modification time."""
    path = folder / filename
    path.write_bytes(f"contents of {filename}".encode())
    os.utime(path, (when.timestamp(), when.timestamp()))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    folder = tmp_path / "dist"
    folder.mkdir()
    for filename, when in FILES.items():
        add_file(folder, filename, when)
    return folder


@pytest.fixture(params=["json", "html"])
def server(request: pytest.FixtureRequest, dist: Path) -> Iterator[IndexServer]:
    """The index in one format only, so each test sees both formats."""
    with IndexServer(dist, json=request.param == "json", html=request.param == "html") as srv:
        yield srv


@pytest.fixture
def upstream(server: IndexServer) -> Iterator[Upstream]:
    with open_upstream(server.url, timeout=5) as up:
        yield up


def expected_demo(
    dist: Path, files_url: str, *, times: bool, sizes: bool | None = None
) -> list[IndexRelease]:
    """The releases of the demo project in ``dist`` served with files under ``files_url``
    (``times``: with upload times; ``sizes``, which defaults to ``times``: with file sizes)."""
    sizes = times if sizes is None else sizes

    def wheel(filename: str) -> WheelLink:
        path = dist / filename
        size = path.stat().st_size if sizes else None
        return WheelLink(filename, files_url + filename, sha256(path), None, size)

    def release(version: str, sdist: str | None, *filenames: str) -> IndexRelease:
        return IndexRelease(
            version=version,
            sdist_filename=sdist,
            sdist_url=files_url + sdist if sdist else None,
            sdist_sha256=sha256(dist / sdist) if sdist else None,
            requires_python=None,
            release_time=min(FILES[f] for f in filenames) if times else None,
            wheels=tuple(wheel(f) for f in filenames if f.endswith(".whl")),
        )

    return [
        # The .tar.gz is preferred to the .zip; the release time is the earliest file's.
        release("1.0", "demo-1.0.tar.gz", "demo-1.0.tar.gz", "demo-1.0.zip", "demo-1.0-py3-none-any.whl"),
        release("1.1", None, "demo-1.1-py3-none-any.whl"),  # binary only
        release("2.0", "demo-2.0.zip", "demo-2.0.zip"),
        release("10.0", "demo-10.0.tar.gz", "demo-10.0.tar.gz"),  # sorted as versions, not text
    ]


def test_project_releases(
    server: IndexServer, upstream: Upstream, dist: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="piwheels_ctl.upstream"):
        page = upstream.project("demo")
    assert page is not None
    assert page.name == "demo"
    assert page.display_name == "demo"
    assert page.etag
    # HTML pages carry no upload times; everything else is the same in both formats.
    files_url = server.url.replace("/simple/", "/files/")
    assert page.releases == expected_demo(dist, files_url, times=server.json)
    assert "demo-1.0.foo.tar.gz" in caplog.text
    assert ("GET", "/simple/demo/", 200) in server.requests


def test_unchanged_page_is_not_read_again(server: IndexServer, upstream: Upstream, dist: Path) -> None:
    first = upstream.project("demo")
    assert first is not None and first.etag is not None
    assert upstream.project("demo", first.etag) is None
    assert server.requests[-1] == ("GET", "/simple/demo/", 304)
    add_file(dist, "demo-11.0.tar.gz", datetime(2024, 7, 1, tzinfo=timezone.utc))
    changed = upstream.project("demo", first.etag)
    assert changed is not None
    assert changed.etag != first.etag
    assert changed.releases[-1].version == "11.0"
    assert server.requests[-1] == ("GET", "/simple/demo/", 200)


def test_yanked_and_requires_python(server: IndexServer, upstream: Upstream) -> None:
    for filename in ("demo-1.0.tar.gz", "demo-1.0.zip", "demo-1.0-py3-none-any.whl"):
        server.yanked[filename] = "broken build" if filename.endswith(".whl") else ""
    server.yanked["demo-2.0.zip"] = "bad"
    server.yanked["demo-10.0.tar.gz"] = ""
    server.requires_python["demo-10.0.tar.gz"] = ">=3.8"
    server.requires_python["demo-1.1-py3-none-any.whl"] = ">=3.9"
    page = upstream.project("demo")
    assert page is not None
    by_version = {release.version: release for release in page.releases}
    assert by_version["1.0"].yanked
    assert by_version["1.0"].yanked_reason == "broken build"
    assert by_version["1.1"].yanked is False
    assert by_version["1.1"].requires_python == ">=3.9"
    assert (by_version["2.0"].yanked, by_version["2.0"].yanked_reason) == (True, "bad")
    assert (by_version["10.0"].yanked, by_version["10.0"].yanked_reason) == (True, None)
    assert by_version["10.0"].requires_python == ">=3.8"


def test_names_are_canonicalized(server: IndexServer, upstream: Upstream) -> None:
    page = upstream.project("OTHER.pkg")
    assert page is not None
    assert page.name == "other-pkg"
    # JSON names the project itself; an HTML page only has the name we asked for.
    assert page.display_name == ("Other_Pkg" if server.json else "OTHER.pkg")
    assert [r.version for r in page.releases] == ["0.1"]
    assert server.requests[-1] == ("GET", "/simple/other-pkg/", 200)


def test_unknown_project(server: IndexServer, upstream: Upstream) -> None:
    with pytest.raises(InputError, match=rf"^nothing: the upstream {server.url} has no such"):
        upstream.project("nothing")


@pytest.mark.parametrize(
    "name", ["", "-demo", "demo-", "demo/../other", "dé", "\u212aelvin", "demo\n", "a b"]
)
def test_invalid_name_is_refused_before_any_request(
    server: IndexServer, upstream: Upstream, name: str
) -> None:
    with pytest.raises(InputError, match="not a valid project name"):
        upstream.project(name)
    assert server.requests == []


@pytest.mark.parametrize(
    ("status", "content_type", "body", "message"),
    [
        (200, JSON_TYPE, b"{not json", "not a project page we can read"),
        (200, JSON_TYPE, b'{"meta": {"api-version": "1.0"}, "files": 3}', "not a project page"),
        (200, JSON_TYPE, b'{"meta": {"api-version": "2.0"}, "name": "demo", "files": []}', "2.0"),
        (200, "application/pdf", b"%PDF-1.4", "not a project page we can read"),
        (500, "text/plain", b"oops", "HTTP 500"),
        (403, "text/plain", b"go away", "HTTP 403"),
    ],
)
def test_unusable_answers(
    server: IndexServer,
    upstream: Upstream,
    status: int,
    content_type: str,
    body: bytes,
    message: str,
) -> None:
    server.canned["/simple/demo/"] = (status, content_type, body)
    with pytest.raises(UpstreamError, match=message) as caught:
        upstream.project("demo")
    assert str(caught.value).startswith(f"{server.url}demo/: ")


def test_listed_versions_without_files(server: IndexServer, upstream: Upstream) -> None:
    """API 1.1 JSON lists versions whose files are all gone; they are releases without sdists."""
    page = {
        "meta": {"api-version": "1.1"},
        "name": "Demo",
        "versions": ["0.9", "1.0", "not-a-version"],
        "files": [
            {
                "filename": "demo-1.0.tar.gz",
                "url": "https://files.example/demo-1.0.tar.gz#sha256=ignored",
                "hashes": {"sha256": "AB" * 32},
                "upload-time": "2024-01-02T03:04:05+02:00",
            }
        ],
    }
    body = json.dumps(page).encode()
    server.canned["/simple/demo/"] = (200, JSON_TYPE, body)
    result = upstream.project("demo")
    assert result == IndexPage(
        name="demo",
        display_name="Demo",
        releases=[
            IndexRelease("0.9", None, None, None, None, None),
            IndexRelease(
                "1.0",
                "demo-1.0.tar.gz",
                "https://files.example/demo-1.0.tar.gz",
                "ab" * 32,
                None,
                datetime(2024, 1, 2, 1, 4, 5, tzinfo=timezone.utc),
            ),
        ],
        etag=f"sha256:{hashlib.sha256(body).hexdigest()}",  # the server gave no ETag
    )
    assert result.releases[1].release_time.tzinfo is timezone.utc  # type: ignore[union-attr]


def test_unchanged_page_without_etag(server: IndexServer, upstream: Upstream) -> None:
    """An index that sends no ETag answers in full, but an unchanged page is still skipped."""
    server.canned["/simple/demo/"] = (200, HTML_TYPE, b'<a href="demo-1.0.tar.gz">demo-1.0.tar.gz</a>')
    first = upstream.project("demo")
    assert first is not None and first.etag is not None
    assert upstream.project("demo", first.etag) is None
    assert server.requests[-1] == ("GET", "/simple/demo/", 200)
    server.canned["/simple/demo/"] = (200, HTML_TYPE, b'<a href="demo-1.1.tar.gz">demo-1.1.tar.gz</a>')
    changed = upstream.project("demo", first.etag)
    assert changed is not None
    assert [r.version for r in changed.releases] == ["1.1"]


def test_unreachable_upstream() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/simple/"
    with open_upstream(url, timeout=5) as upstream, pytest.raises(UpstreamError) as caught:
        upstream.project("demo")
    assert str(caught.value).startswith(f"{url}demo/: the upstream did not answer: ")
    with open_upstream(url, timeout=5) as upstream, pytest.raises(UpstreamError, match=url):
        list(upstream.project_names())


def test_silent_upstream_times_out() -> None:
    """A server that accepts connections but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/simple/"
        with open_upstream(url, timeout=0.2) as upstream, pytest.raises(UpstreamError, match="timed out"):
            upstream.project("demo")


def test_project_names(server: IndexServer, upstream: Upstream) -> None:
    assert list(upstream.project_names()) == [("demo", "demo"), ("other-pkg", "Other_Pkg")]
    assert server.requests == [("GET", "/simple/", 200)]


def test_content_negotiation(dist: Path) -> None:
    """Project pages in JSON when offered; the root listing in HTML, which parses as it streams."""
    both = IndexServer(dist)
    json_only = IndexServer(dist, html=False)
    html_only = IndexServer(dist, json=False)
    assert both.negotiate(ACCEPT_PROJECT) == JSON_TYPE
    assert both.negotiate(ACCEPT_ROOT) == HTML_TYPE
    assert json_only.negotiate(ACCEPT_ROOT) == JSON_TYPE
    assert html_only.negotiate(ACCEPT_PROJECT) == HTML_TYPE
    assert both.negotiate("*/*") == "text/html"
    assert both.negotiate("text/html, application/vnd.pypi.simple.v1+json;q=0") == "text/html"


def test_project_names_skip_invalid_names(dist: Path) -> None:
    with IndexServer(dist) as server, open_upstream(server.url) as upstream:
        server.canned["/simple/"] = (
            200,
            HTML_TYPE,
            b'<a href="a/">Alpha_One</a><a href="b/">not a name!</a><a href="c/">c</a>',
        )
        assert list(upstream.project_names()) == [("alpha-one", "Alpha_One"), ("c", "c")]


@pytest.mark.parametrize(
    ("status", "content_type", "body", "message"),
    [
        (200, JSON_TYPE, b"[1, 2", "not a project list we can read"),
        (200, "application/pdf", b"%PDF-1.4", "not a project list we can read"),
        (503, "text/plain", b"later", "HTTP 503"),
        (404, "text/plain", b"no", "HTTP 404"),
    ],
)
def test_project_names_unusable_answers(
    server: IndexServer,
    upstream: Upstream,
    status: int,
    content_type: str,
    body: bytes,
    message: str,
) -> None:
    server.canned["/simple/"] = (status, content_type, body)
    with pytest.raises(UpstreamError, match=message) as caught:
        list(upstream.project_names())
    assert str(caught.value).startswith(server.url)


def test_local_folder(dist: Path, caplog: pytest.LogCaptureFixture) -> None:
    (dist / "README.txt").write_text("not a distribution")
    (dist / "notes.tar.gz").write_text("no version in the name")
    with open_upstream(str(dist)) as upstream:
        with caplog.at_level(logging.WARNING, logger="piwheels_ctl.upstream"):
            page = upstream.project("Demo")
        assert page is not None
        assert (page.name, page.display_name) == ("demo", "demo")
        expected = expected_demo(dist, dist.as_uri() + "/", times=True)
        assert page.releases == expected
        assert "demo-1.0.foo.tar.gz" in caplog.text
        assert page.etag is not None
        assert upstream.project("demo", page.etag) is None
        # A new file, or a file rewritten, makes the project page new.
        add_file(dist, "demo-3.0.tar.gz", datetime(2024, 8, 1, tzinfo=timezone.utc))
        changed = upstream.project("demo", page.etag)
        assert changed is not None
        assert [r.version for r in changed.releases] == ["1.0", "1.1", "2.0", "3.0", "10.0"]
        add_file(dist, "demo-3.0.tar.gz", datetime(2024, 8, 2, tzinfo=timezone.utc))
        assert upstream.project("demo", changed.etag) is not None
        # Another project's files do not change this one's page.
        latest = upstream.project("demo")
        assert latest is not None
        add_file(dist, "other_pkg-0.2.tar.gz", datetime(2024, 8, 1, tzinfo=timezone.utc))
        assert upstream.project("demo", latest.etag) is None

        assert "notes.tar.gz" not in caplog.text
        with caplog.at_level(logging.WARNING, logger="piwheels_ctl.upstream"):
            names = list(upstream.project_names())
        assert names == [("demo", "demo"), ("other-pkg", "Other_Pkg")]
        assert "notes.tar.gz: ignored: not a distribution filename" in caplog.text
        with pytest.raises(InputError, match=rf"^nothing: the upstream {dist} has no such"):
            upstream.project("nothing")
        with pytest.raises(InputError, match="not a valid project name"):
            upstream.project("../dist")


def test_local_folder_missing(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with open_upstream(str(missing)) as upstream:
        with pytest.raises(UpstreamError, match=f"^{missing}: cannot read the upstream folder"):
            upstream.project("demo")
        with pytest.raises(UpstreamError, match=f"^{missing}: "):
            list(upstream.project_names())
