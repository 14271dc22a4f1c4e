"""The upstream is untrusted input: each attack runs for real against a misbehaving server on loopback."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from piwheels_ctl.errors import UpstreamError
from piwheels_ctl.upstream.index import PROJECT_PAGE_MAX, ROOT_PAGE_MAX
from piwheels_ctl.upstream.source import open_upstream

from helpers import clean_env, piwheels
from indexserver import (
    HTML_TYPE,
    JSON_TYPE,
    HostileServer,
    IndexServer,
    flood,
    response_bytes,
    send_then_close,
    trickle,
)

PAGE = json.dumps({"meta": {"api-version": "1.1"}, "name": "demo", "files": []}).encode()


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    folder = tmp_path / "dist"
    folder.mkdir()
    (folder / "demo-1.0.tar.gz").write_bytes(b"sdist")
    return folder


def _trickled_body(sock: socket.socket, _path: str) -> None:
    """Headers at once, then the body one byte a second."""
    body = PAGE
    sock.sendall(response_bytes(b"", JSON_TYPE, length=len(body)))
    for byte in body:
        sock.sendall(bytes([byte]))
        time.sleep(1)


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_a_trickling_upstream_is_cut_off_at_http_timeout(phase: str) -> None:
    behaviour = trickle(response_bytes(PAGE, JSON_TYPE)) if phase == "headers" else _trickled_body
    with HostileServer(behaviour) as server, open_upstream(server.url, timeout=2) as upstream:
        started = time.monotonic()
        with pytest.raises(UpstreamError) as caught:
            upstream.project("demo")
        took = time.monotonic() - started
    assert 1 <= took < 30, f"the request took {took:.1f} s with http_timeout=2"
    assert str(caught.value).startswith(f"{server.url}demo/: timed out"), str(caught.value)


def test_a_trickling_root_listing_is_cut_off_too() -> None:
    """The root listing gets ROOT_TIME_FACTOR (10) times http_timeout: here 3 s."""
    page = b'<!DOCTYPE html><html><body><a href="a/">a</a>' * 100
    behaviour = trickle(response_bytes(page, HTML_TYPE), 0.05)
    with HostileServer(behaviour) as server, open_upstream(server.url, timeout=0.3) as upstream:
        started = time.monotonic()
        with pytest.raises(UpstreamError, match="timed out") as caught:
            list(upstream.project_names())
        took = time.monotonic() - started
    assert 1 <= took < 30, f"the listing took {took:.1f} s with a deadline of 3 s"
    assert str(caught.value).startswith(server.url)


CUT_OFF = {
    "mid-headers": b"HTTP/1.1 200 OK\r\nContent-Ty",
    "after-a-header-line": f"HTTP/1.1 200 OK\r\nContent-Type: {HTML_TYPE}\r\n".encode(),
    "no-answer": b"",
    "mid-body": response_bytes(PAGE[:10], JSON_TYPE, length=len(PAGE)),
    "mid-chunk": (
        f"HTTP/1.1 200 OK\r\nContent-Type: {JSON_TYPE}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        + b"40\r\n"
        + PAGE[:10]
    ),
}


@pytest.mark.parametrize("answer", CUT_OFF.values(), ids=CUT_OFF.keys())
def test_an_answer_cut_off_is_a_bad_page_not_an_empty_project(answer: bytes) -> None:
    with (
        HostileServer(send_then_close(answer)) as server,
        open_upstream(server.url, timeout=10) as upstream,
        pytest.raises(UpstreamError) as caught,
    ):
        page = upstream.project("demo")
        pytest.fail(f"a cut-off answer was taken for a page: {page}")
    assert str(caught.value).startswith(f"{server.url}demo/: "), str(caught.value)


@pytest.mark.parametrize("declare", [True, False], ids=["declared", "undeclared"])
def test_a_project_page_past_the_size_cap_is_refused(declare: bool) -> None:
    behaviour = flood(
        HTML_TYPE, b'<a href="demo-1.0.tar.gz">demo-1.0.tar.gz</a>\n', PROJECT_PAGE_MAX + 1, declare=declare
    )
    with (
        HostileServer(behaviour) as server,
        open_upstream(server.url, timeout=60) as upstream,
        pytest.raises(UpstreamError, match="larger than the 16,777,216 bytes allowed") as caught,
    ):
        upstream.project("demo")
    assert str(caught.value).startswith(f"{server.url}demo/: ")


def test_a_root_listing_past_the_size_cap_is_refused() -> None:
    behaviour = flood(HTML_TYPE, b"<br>" + b" " * 1020, ROOT_PAGE_MAX + 1, declare=False)
    with (
        HostileServer(behaviour) as server,
        open_upstream(server.url, timeout=60) as upstream,
        pytest.raises(UpstreamError, match="larger than the 67,108,864 bytes allowed") as caught,
    ):
        for _name in upstream.project_names():
            pass
    assert str(caught.value).startswith(server.url)


HOSTILE_PAGES = {
    "json-nested": (JSON_TYPE, b"[" * 100_000 + b"]" * 100_000, "nested too deep"),
    "json-object-nested": (JSON_TYPE, b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "nested too deep"),
    "html-nested": (HTML_TYPE, b"<html><body>" + b"<div>" * 100_000, "nested more than 64 deep"),
    "links-nested": (HTML_TYPE, b'<a href="demo-1.0.tar.gz">x' * 20_000, "a link inside a link"),
    "json-as-html": (HTML_TYPE, PAGE, "does not start with markup"),
    "text-as-html": (HTML_TYPE, b"demo-1.0.tar.gz\n", "does not start with markup"),
    "empty-html": (HTML_TYPE, b"", "labelled HTML, but empty"),
    "unknown-type": ("application/octet-stream", PAGE, "Content-Type 'application/octet-stream'"),
}


@pytest.mark.parametrize(
    ("content_type", "body", "message"), HOSTILE_PAGES.values(), ids=HOSTILE_PAGES.keys()
)
def test_a_hostile_project_page_is_one_clear_error(
    content_type: str, body: bytes, message: str, dist: Path
) -> None:
    with IndexServer(dist) as server, open_upstream(server.url, timeout=30) as upstream:
        server.canned["/simple/demo/"] = (200, content_type, body)
        started = time.monotonic()
        with pytest.raises(UpstreamError, match=message) as caught:
            upstream.project("demo")
        took = time.monotonic() - started
    assert str(caught.value).startswith(f"{server.url}demo/: not a project page we can read: ")
    assert took < 30, f"refusing the page took {took:.1f} s"


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [v for k, v in HOSTILE_PAGES.items() if k != "links-nested"],
    ids=[k for k in HOSTILE_PAGES if k != "links-nested"],
)
def test_a_hostile_root_listing_is_one_clear_error(
    content_type: str, body: bytes, message: str, dist: Path
) -> None:
    with IndexServer(dist) as server, open_upstream(server.url, timeout=30) as upstream:
        server.canned["/simple/"] = (200, content_type, body)
        with pytest.raises(UpstreamError, match=message) as caught:
            list(upstream.project_names())
    assert str(caught.value).startswith(f"{server.url}: not a project list we can read: ")


def test_no_content_type_is_refused() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(PAGE), PAGE)
    with HostileServer(send_then_close(answer)) as server, open_upstream(server.url, timeout=10) as upstream:
        with pytest.raises(UpstreamError, match="Content-Type none, not HTML or JSON") as caught:
            upstream.project("demo")
        with pytest.raises(UpstreamError, match="Content-Type none"):
            list(upstream.project_names())
    assert str(caught.value).startswith(f"{server.url}demo/: ")


@pytest.fixture
def elsewhere(dist: Path) -> Iterator[IndexServer]:
    """The same index on another loopback address: another host, as far as redirects go."""
    with IndexServer(dist, host="127.0.0.2") as server:
        yield server


def test_a_same_host_redirect_is_followed(dist: Path) -> None:
    with IndexServer(dist) as server, open_upstream(server.url, timeout=10) as upstream:
        server.redirects["/simple/demo/"] = (301, "/simple/moved/")
        server.canned["/simple/moved/"] = (200, JSON_TYPE, PAGE)
        page = upstream.project("demo")
    assert page is not None and page.display_name == "demo"
    assert ("GET", "/simple/moved/", 200) in server.requests


def test_a_redirect_to_another_host_is_refused_unless_allowed(dist: Path, elsewhere: IndexServer) -> None:
    with IndexServer(dist) as server:
        server.redirects["/simple/demo/"] = (302, f"{elsewhere.url}demo/")
        server.redirects["/simple/"] = (302, elsewhere.url)
        with open_upstream(server.url, timeout=10) as upstream:
            with pytest.raises(UpstreamError, match=r"refused a redirect to http://127\.0\.0\.2:") as caught:
                upstream.project("demo")
            with pytest.raises(UpstreamError, match="upstream_redirect_hosts"):
                list(upstream.project_names())
        assert elsewhere.requests == [], "the other host was asked all the same"
        assert str(caught.value).startswith(f"{server.url}demo/: ")
        with open_upstream(server.url, timeout=10, redirect_hosts=["127.0.0.2"]) as upstream:
            page = upstream.project("demo")
            names = list(upstream.project_names())
    assert page is not None and [r.version for r in page.releases] == ["1.0"]
    assert names == [("demo", "demo")]


def test_a_redirect_loop_ends(dist: Path) -> None:
    with IndexServer(dist) as server, open_upstream(server.url, timeout=10) as upstream:
        server.redirects["/simple/demo/"] = (307, "/simple/demo/")
        with pytest.raises(UpstreamError, match="more than 5 redirects"):
            upstream.project("demo")


def test_cli_add_against_a_trickling_upstream_ends_near_http_timeout(tmp_path: Path) -> None:
    env = clean_env(PIWHEELS_DATA_DIR=str(tmp_path / "data"), PIWHEELS_HTTP_TIMEOUT="2")
    piwheels(env, "init")
    with HostileServer(trickle(response_bytes(PAGE, JSON_TYPE))) as server:
        started = time.monotonic()
        proc = piwheels({**env, "PIWHEELS_UPSTREAM": server.url}, "add", "demo", check=False)
        took = time.monotonic() - started
    assert 1 <= took < 30, f"add took {took:.1f} s with http_timeout=2"
    assert proc.returncode == 1, proc.stderr
    assert f"error: {server.url}demo/: timed out" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
