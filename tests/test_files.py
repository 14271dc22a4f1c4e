"""The one set of atomic writers: a file is replaced whole or not at all, and no temp file stays."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from piwheels_ctl.files import atomic_file, atomic_path, replacing, synced_together, write_if_changed


def test_write_if_changed_writes_readable_files_only_when_the_bytes_differ(tmp_path: Path) -> None:
    page = tmp_path / "index.html"
    assert write_if_changed(page, b"one")
    assert page.stat().st_mode & 0o777 == 0o644  # the web server runs as another user
    inode = page.stat().st_ino
    assert not write_if_changed(page, b"one")
    assert page.stat().st_ino == inode
    assert write_if_changed(page, b"two")
    assert page.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.html"]


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "cache.sqlite"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_file(target) as f:
        f.write(b"half")
        raise RuntimeError
    with pytest.raises(RuntimeError), atomic_path(target) as temp, closing(sqlite3.connect(temp)) as conn:
        conn.execute("CREATE TABLE t (x)")
        raise RuntimeError
    with pytest.raises(RuntimeError), replacing(target) as text:
        text.write("half")
        raise RuntimeError
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["cache.sqlite"]


def test_a_replacement_with_the_same_text_leaves_the_file_alone(tmp_path: Path) -> None:
    root = tmp_path / "index.json"
    with replacing(root) as first:
        first.write("a\n")
    inode = root.stat().st_ino
    with replacing(root) as same:
        same.write("a\n")
    assert (first.changed, same.changed, root.stat().st_ino) == (True, False, inode)


def test_files_synced_together_are_renamed_at_the_end_of_the_block(tmp_path: Path) -> None:
    with synced_together():
        write_if_changed(tmp_path / "a", b"a")
        with atomic_file(tmp_path / "b") as f:
            f.write(b"b")
        assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert (tmp_path / "a").read_bytes() + (tmp_path / "b").read_bytes() == b"ab"
    with pytest.raises(RuntimeError), synced_together():
        write_if_changed(tmp_path / "c", b"c")
        raise RuntimeError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]
