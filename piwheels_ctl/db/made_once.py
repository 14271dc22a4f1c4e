"""Rows made once under a unique key, whichever of several transactions makes them first."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import ColumnElement, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

Row = TypeVar("Row")


def get_or_make(
    session: Session, model: type[Row], where: ColumnElement[bool], make: Callable[[], Row]
) -> tuple[Row, bool]:
    """The row of ``model`` that ``where`` (a unique key) selects, made by ``make`` when there is
    none; and whether this call made it.

    Another transaction may make the same row at the same moment (controllers starting together):
    on PostgreSQL the insert then waits for it and fails on the unique key, so it is tried in a
    savepoint and, on failure, the other's row is read instead (read committed: it is visible
    once the insert has failed). On SQLite one writer at a time never gets there. The savepoint's
    commit runs the session's before-commit hooks (the queue's upkeep) once more, early.
    """
    row = session.scalar(select(model).where(where))
    if row is not None:
        return row, False
    try:
        with session.begin_nested():
            row = make()
            session.add(row)
    except IntegrityError:
        row = session.scalar(select(model).where(where))
        if row is None:  # another unique key, or a foreign key: not the race this is for
            raise
        return row, False
    return row, True
