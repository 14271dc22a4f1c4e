"""What an upstream names cannot reach past it: a folder's symbolic links are not followed (by the
controller nor by a root agent), an index's file: URLs are not stored, and what it says is told as
text in one line each (non-ASCII names, a newer API version)."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from piwheels_ctl.agent import sdistfetch
from piwheels_ctl.errors import ProjectGone, UpstreamError
from piwheels_ctl.farm.executors import sdist_to_send
from piwheels_ctl.queue.claims import Job
from piwheels_ctl.upstream.source import open_upstream

from helpers import clean_env, piwheels
from indexserver import HTML_TYPE, JSON_TYPE, IndexServer

SECRET = b"root:$6$not-for-builds:19000:0:99999:7:::\n"


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A file only its owner may read, outside every upstream folder (as /etc/shadow is)."""
    path = tmp_path / "shadow"
    path.write_bytes(SECRET)
    path.chmod(0o600)
    return path


@pytest.fixture
def folder(tmp_path: Path, secret: Path) -> Path:
    """A folder upstream: one real sdist, and a link to the secret named as an sdist."""
    folder = tmp_path / "upstream"
    folder.mkdir()
    (folder / "alpha-1.0.tar.gz").write_bytes(b"an sdist")
    (folder / "evil-1.0.tar.gz").symlink_to(secret)
    return folder


def test_a_folder_upstream_lists_no_symbolic_link(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    with open_upstream(str(folder)) as upstream:
        names = list(upstream.project_names())
        assert names == [("alpha", "alpha")], f"listed: {names}"
        assert f"{folder / 'evil-1.0.tar.gz'}: ignored: a symbolic link" in caplog.text, caplog.text
        with pytest.raises(ProjectGone, match="has no such project"):
            upstream.project("evil")
        page = upstream.project("alpha")
        assert page is not None and [r.version for r in page.releases] == ["1.0"]
        # A file swapped for a link once listed is not read through it either.
        url = page.releases[0].sdist_url
        assert url is not None and url.startswith("file://"), url
        (folder / "alpha-1.0.tar.gz").unlink()
        (folder / "alpha-1.0.tar.gz").symlink_to(folder.parent / "shadow")
        with pytest.raises(UpstreamError, match="cannot read the upstream's file"):
            upstream.download(url, folder.parent / "copy", sha256="0" * 64, limit=1 << 20, seconds=10)
    assert not (folder.parent / "copy").exists()


def test_cli_add_of_a_linked_sdist_finds_no_project(folder: Path, tmp_path: Path) -> None:
    env = clean_env(PIWHEELS_DATA_DIR=str(tmp_path / "data"), PIWHEELS_UPSTREAM=str(folder))
    piwheels(env, "init")
    proc = piwheels(env, "add", "evil", check=False)
    assert proc.returncode != 0 and "evil: the upstream" in proc.stderr, proc.stderr
    assert "has no such project" in proc.stderr, proc.stderr


def test_the_agent_copies_no_file_through_a_symbolic_link(folder: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    evil = folder / "evil-1.0.tar.gz"
    with pytest.raises(sdistfetch.DownloadError, match="a symbolic link: not followed"):
        sdistfetch.fetch_sdist(evil.as_uri(), None, str(work))
    assert list(work.iterdir()) == [], "the agent copied the link's target"
    # Nor anything that is not a regular file (a FIFO would hang the read).
    fifo = folder / "fifo-1.0.tar.gz"
    os.mkfifo(fifo)
    with pytest.raises(sdistfetch.DownloadError, match="not a regular file"):
        sdistfetch.fetch_sdist(fifo.as_uri(), None, str(work))
    # The folder's own files are still fetched.
    alpha = sdistfetch.fetch_sdist((folder / "alpha-1.0.tar.gz").as_uri(), None, str(work))
    assert Path(alpha).read_bytes() == b"an sdist"


def _page(links: str, version: str = "1.0") -> bytes:
    return (
        f'<!DOCTYPE html><html><head><meta name="pypi:repository-version" content="{version}">'
        f"</head><body>{links}</body></html>"
    ).encode()


def test_an_index_cannot_give_a_file_url_for_an_sdist(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "alpha-1.0.tar.gz").write_bytes(b"an sdist")
    data = tmp_path / "data"
    with IndexServer(dist) as index:
        index.canned["/simple/alpha/"] = (
            200,
            HTML_TYPE,
            _page(
                '<a href="/files/alpha-1.0.tar.gz">alpha-1.0.tar.gz</a>'
                '<a href="file:///etc/alpha-2.0.tar.gz">alpha-2.0.tar.gz</a>'
                '<a href="ftp://files.example/alpha-3.0.tar.gz">alpha-3.0.tar.gz</a>'
            ),
        )
        env = clean_env(PIWHEELS_DATA_DIR=str(data), PIWHEELS_UPSTREAM=index.url)
        piwheels(env, "init")
        proc = piwheels(env, "add", "alpha")
    assert "alpha-2.0.tar.gz: ignored: a 'file' URL, not http/https" in proc.stderr, proc.stderr
    assert "alpha-3.0.tar.gz: ignored: a 'ftp' URL, not http/https" in proc.stderr, proc.stderr
    with sqlite3.connect(data / "piwheels.db") as conn:
        stored = conn.execute("SELECT version, sdist_url FROM versions").fetchall()
    assert stored == [("1.0", f"{index.url.removesuffix('/simple/')}/files/alpha-1.0.tar.gz")], stored


def test_a_file_url_stored_before_is_sent_only_for_a_folder_upstream() -> None:
    job = Job(version_id=1, abi_id=1, name="alpha", version="2.0", abi="cp311-cp311-linux_x86_64",
              priority=0, sdist_url="file:///etc/alpha-2.0.tar.gz", sdist_sha256=None)  # fmt: skip
    assert sdist_to_send(job, files=False) == (None, None)
    assert sdist_to_send(job, files=True) == ("file:///etc/alpha-2.0.tar.gz", None)


def test_warnings_print_non_ascii_names_as_text(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    with IndexServer(dist) as index:
        # text/html without a charset, as many indexes serve it: UTF-8, as pip reads it.
        links = "".join(f'<a href="/simple/{n}/">{n}</a>' for n in ("alpha", "café-über", "Ωmega"))
        index.canned["/simple/"] = (200, "text/html", _page(links))
        env = clean_env(PIWHEELS_DATA_DIR=str(tmp_path / "data"), PIWHEELS_UPSTREAM=index.url)
        piwheels(env, "init")
        proc = piwheels(env, "sync", "--all")
    assert "ignored 'café-über': not a valid project name" in proc.stderr, proc.stderr
    assert "ignored 'Ωmega': not a valid project name" in proc.stderr, proc.stderr


def test_a_newer_api_version_is_one_line_naming_the_upstream(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "alpha-1.0.tar.gz").write_bytes(b"an sdist")
    (dist / "beta-1.0.tar.gz").write_bytes(b"an sdist")
    with IndexServer(dist) as index:
        for name in ("alpha", "beta"):
            index.canned[f"/simple/{name}/"] = (
                200,
                HTML_TYPE,
                _page(f'<a href="/files/{name}-1.0.tar.gz">{name}-1.0.tar.gz</a>', "1.999"),
            )
        beta = {"meta": {"api-version": "1.999"}, "name": "beta", "files": []}
        env = clean_env(PIWHEELS_DATA_DIR=str(tmp_path / "data"), PIWHEELS_UPSTREAM=index.url)
        piwheels(env, "init")
        proc = piwheels(env, "add", "alpha", "beta")
        index.canned["/simple/beta/"] = (200, JSON_TYPE, json.dumps(beta).encode())
        again = piwheels(env, "sync")
    for run in (proc, again):
        lines = run.stderr.splitlines()
        expected = f"the upstream {index.url} declares API version 1.999, newer than the 1.4"
        assert len(lines) == 1 and lines[0].startswith(expected), run.stderr
        assert "Warning" not in run.stderr, run.stderr
