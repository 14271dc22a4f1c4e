"""What the operator sees when the data folder lets the CLI down: a corrupt database, a read-only
folder, a full disk, a page in the way. One line naming the file and what to do, a non-zero exit."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from helpers import clean_env, piwheels
from wheels import make_wheel


@contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``folder`` (root only), unmounted afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs (a small or read-only disk) needs root")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {proc.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=60, check=True)


def _remount(folder: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(folder)], check=True, timeout=60)


def _setup(data: Path, tmp_path: Path, **settings: str) -> dict[str, str]:
    """A data folder with a database, two imported wheels and a published index."""
    upstream = tmp_path / "upstream"
    upstream.mkdir(exist_ok=True)
    env = clean_env(PIWHEELS_DATA_DIR=str(data), PIWHEELS_UPSTREAM=str(upstream), **settings)
    piwheels(env, "init")
    dist = tmp_path / "dist"
    dist.mkdir(exist_ok=True)
    piwheels(env, "import", str(make_wheel(dist, "pick", "1.0")), str(make_wheel(dist, "pick", "2.0")))
    piwheels(env, "publish")
    return env


def _one_line(proc: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert proc.returncode != 0, f"exited 0:\n{proc.stdout}{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{proc.stderr}"
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    return lines[0]


@pytest.mark.parametrize("damage", ["header", "pages"])
@pytest.mark.parametrize("command", ["publish", "audit", "status"])
def test_a_corrupt_database_is_named(tmp_path: Path, damage: str, command: str) -> None:
    data = tmp_path / "data"
    env = _setup(data, tmp_path)
    database = data / "piwheels.db"
    raw = bytearray(database.read_bytes())
    if damage == "header":
        raw[:100] = b"\x5a" * 100
    else:  # the schema page survives, the tables' pages do not
        raw[4096:] = b"\x5a" * (len(raw) - 4096)
    database.write_bytes(bytes(raw))
    _one_line(piwheels(env, command, check=False), str(database), "backup")


def test_a_read_only_data_folder_is_named(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "20m") as mnt:
        data = mnt / "data"
        env = _setup(data, tmp_path)
        piwheels(env, "import", str(make_wheel(tmp_path / "dist", "other", "1.0")))  # to publish
        _remount(mnt, "ro")
        line = _one_line(piwheels(env, "publish", check=False), str(data))
        assert "read-only" in line or "writable" in line, line


@pytest.mark.parametrize("database", ["on-the-full-disk", "elsewhere"])
def test_a_full_disk_during_publish_is_named_and_loses_nothing(tmp_path: Path, database: str) -> None:
    with tmpfs(tmp_path / "mnt", "4m") as mnt:
        data = mnt / "data"
        elsewhere = {"PIWHEELS_DATABASE_URL": f"sqlite:///{tmp_path / 'piwheels.db'}"}
        env = _setup(data, tmp_path, **(elsewhere if database == "elsewhere" else {}))
        # A new project to publish, then the disk fills up.
        piwheels(env, "import", str(make_wheel(tmp_path / "dist", "other", "1.0")))
        filler = mnt / "filler"
        with open(filler, "wb", buffering=0) as f, pytest.raises(OSError):
            while True:
                f.write(b"\0" * 4096)
        # The database or a page, whichever SQLite or the publisher writes first on the full disk.
        line = _one_line(piwheels(env, "publish", check=False), str(data), "full")
        if database == "elsewhere":
            assert str(data / "www") in line and "disk is full" in line, line
        assert not list((data / "www").rglob(".*.tmp")), "temp files left behind"
        filler.unlink()
        # The project stayed dirty: once there is room, publish writes its page.
        piwheels(env, "publish")
        assert (data / "www" / "simple" / "other" / "index.html").is_file(), line


def test_a_page_that_cannot_be_read_fails_publish_and_audit(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = _setup(data, tmp_path)
    page = data / "www" / "simple" / "pick" / "index.json"
    page.unlink()
    page.mkdir()  # a folder where the page should be: it cannot be read or replaced
    (page / "keep").write_text("x")
    assert piwheels(env, "audit", check=False).returncode != 0
    _one_line(piwheels(env, "publish", "--full", check=False), str(page))
    shutil.rmtree(page)
    piwheels(env, "publish", "--full")
    assert piwheels(env, "audit", check=False).returncode == 0
