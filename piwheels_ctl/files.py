"""Files of the data folder: a file's digest read once (the one helper the controller uses)."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20


def sha256_of(path: Path) -> tuple[int, str]:
    """Size and sha256 of the file at ``path``, read once in bounded chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
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
