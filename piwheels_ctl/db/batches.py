"""Bounded ``IN (...)`` lists: every query over a caller's list of ids goes through here."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import TypeVar

T = TypeVar("T")

# SQLite before 3.32 allows 999 bound parameters a statement (Debian buster's, a builder-era
# master's); PostgreSQL's protocol 32767. 500 leaves room for a query's other parameters.
BATCH = 500


def in_batches(items: Iterable[T], size: int = BATCH) -> Iterator[Sequence[T]]:
    """``items`` in lists of at most ``size``, in order: one ``IN (...)`` each."""
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch
