"""Files of the data folder: a file's digest read once, every file written atomically (a
temporary file beside it, made durable, then renamed over it), and a size as people read it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from pathlib import Path
from typing import IO, BinaryIO

CHUNK = 1 << 20
# mkstemp creates 0600 files; the web server (and rsync's ssh, for known_hosts) runs as another user.
MODE = 0o644


def sha256_of(path: Path) -> tuple[int, str]:
    """Size and sha256 of the file at ``path``, read once in bounded chunks."""
    with open(path, "rb") as f:
        return sha256_of_stream(f)


def sha256_of_stream(f: BinaryIO) -> tuple[int, str]:
    """Size and sha256 of what is left to read of ``f``, read in bounded chunks."""
    digest = hashlib.sha256()
    size = 0
    while chunk := f.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def sha256_or_none(path: Path) -> str | None:
    """The sha256 of the file at ``path``, or None when there is no such file."""
    try:
        return sha256_of(path)[1]
    except FileNotFoundError:
        return None


def human_size(size: int | float | None) -> str:
    """``size`` bytes as people read it: ``433006`` is ``422.9 KiB``."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


# The files written in a ``synced_together`` block, as (temporary file, its place).
_deferred: ContextVar[list[tuple[Path, Path]] | None] = ContextVar("_deferred", default=None)


def _temporary(path: Path) -> tuple[int, Path]:
    """A new empty file beside ``path`` (the same file system, so the rename is atomic)."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    return fd, Path(name)


def _put(tmp: Path, path: Path, mode: int) -> None:
    """Rename the written ``tmp`` over ``path`` now, or at the end of a ``synced_together`` block."""
    tmp.chmod(mode)
    deferred = _deferred.get()
    if deferred is None:
        tmp.replace(path)
    else:
        deferred.append((tmp, path))


def _must_sync() -> bool:
    # A crash must not leave a renamed but empty file behind; in a ``synced_together`` block one
    # sync at its end covers every file.
    return _deferred.get() is None


@contextmanager
def atomic_file(path: Path, *, mode: int = MODE) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new contents to: it replaces ``path`` whole at the end of
    the block, or is removed if the block fails."""
    fd, tmp = _temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            if _must_sync():
                os.fsync(f.fileno())
        _put(tmp, path, mode)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_path(path: Path, *, mode: int = MODE) -> Iterator[Path]:
    """The path of an empty file for a writer that opens it itself (SQLite): it replaces ``path``
    whole at the end of the block, or is removed if the block fails."""
    fd, tmp = _temporary(path)
    os.close(fd)
    try:
        yield tmp
        if _must_sync():
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _put(tmp, path, mode)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_if_changed(path: Path, data: bytes) -> bool:
    """Atomically replace ``path`` with ``data`` unless it already holds exactly that; whether it
    wrote (inside ``synced_together``, the rename waits for the end of its block)."""
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    with atomic_file(path) as f:
        f.write(data)
    return True


@contextmanager
def synced_together() -> Iterator[None]:
    """The files written in the block are made durable by one sync at its end, then renamed
    into place: thousands of files cost one flush, not one each (a full publish)."""
    pending: list[tuple[Path, Path]] = []
    token = _deferred.set(pending)
    try:
        yield
    except BaseException:
        for tmp, _path in pending:
            tmp.unlink(missing_ok=True)
        raise
    finally:
        _deferred.reset(token)
    os.sync()
    for done, (tmp, path) in enumerate(pending):
        try:
            tmp.replace(path)
        except BaseException:  # a rename refused (a folder in the way): the rest are not left behind
            for left, _path in pending[done:]:
                left.unlink(missing_ok=True)
            raise


class Replacement:
    """Text streamed into a temporary file beside ``path``, hashed as it goes: ``changed`` says,
    once its ``replacing`` block ends, whether it replaced ``path``."""

    def __init__(self, path: Path, file: IO[str], tmp: Path) -> None:
        self.path = path
        self.changed = False
        self.file = file
        self.tmp = tmp
        self._digest = hashlib.sha256()

    def write(self, text: str) -> None:
        self._digest.update(text.encode("utf-8"))
        self.file.write(text)

    def _finish(self) -> None:
        self.file.flush()
        if sha256_or_none(self.path) == self._digest.hexdigest():
            self.file.close()
            self.tmp.unlink()
            return
        if _must_sync():
            os.fsync(self.file.fileno())
        self.file.close()
        _put(self.tmp, self.path, MODE)
        self.changed = True


@contextmanager
def replacing(path: Path) -> Iterator[Replacement]:
    """A file to stream ``path``'s new text to (UTF-8, ``\\n`` line ends), in bounded memory; it
    replaces ``path`` at the end of the block unless the bytes are the same, and is removed if
    the block fails."""
    fd, tmp = _temporary(path)
    replacement = Replacement(path, os.fdopen(fd, "w", encoding="utf-8", newline="\n"), tmp)
    try:
        yield replacement
        replacement._finish()
    except BaseException:
        with suppress(OSError):  # closing flushes what is left: on a full disk that fails again
            replacement.file.close()
        tmp.unlink(missing_ok=True)
        raise
