"""The one exception hierarchy: every error a user can act on, turned into a message by the CLI."""

from __future__ import annotations

import errno
import os
from pathlib import Path


class PiwheelsError(Exception):
    """An error the CLI reports as one line naming the input at fault."""

    exit_code = 1


class ConfigError(PiwheelsError):
    """A configuration key or value is wrong."""

    exit_code = 2


class InputError(PiwheelsError):
    """A name, version, requirement or file given by the user is malformed or unknown."""

    exit_code = 2


class ProjectGone(InputError):
    """The upstream has no such project (any more): 404 or 410 on its page, or not in its folder."""


class UpstreamError(PiwheelsError):
    """The upstream index is unreachable or answered with something we cannot use."""


class DatabaseOpenError(PiwheelsError):
    """The database is missing, unreachable or at a schema this code does not know."""


class DatabaseDamagedError(DatabaseOpenError):
    """The database's own check finds it damaged (a torn or overwritten page): its answers cannot be
    trusted, so nothing may be moved or deleted on their word."""


class NotInitialisedError(DatabaseOpenError):
    """No database where the settings point: a usage error (run ``init``, or from the right folder)."""

    exit_code = 2


class VerifyError(PiwheelsError):
    """A wheel is not what its build said it is."""


class ArrivalError(VerifyError):
    """A wheel did not arrive as the builder reported it: the builder, not the project, is at fault."""


class TagError(ArrivalError):
    """A wheel is tagged for another platform or Python than the builder it came from: the
    builder built it wrongly (e.g. a 64-bit kernel's platform for a 32-bit userland)."""


class StorageError(PiwheelsError):
    """A file of the data folder cannot be read or written: disk full, read-only, in the way."""


_ADVICE = {
    errno.ENOSPC: "the disk is full: free space there and run again",
    errno.EDQUOT: "the disk quota is used up: free space there and run again",
    errno.EROFS: "the file system is read-only: mount it read-write or set data_dir to a writable folder",
    errno.EACCES: "permission denied: make it readable and writable by the user running piwheels-ctl",
    errno.EPERM: "permission denied: make it readable and writable by the user running piwheels-ctl",
    errno.EISDIR: "a folder is in the way of a file: move it aside and run again",
    errno.ENOTDIR: "a file is in the way of a folder: move it aside and run again",
    errno.EIO: "the disk reported an I/O error: check it (dmesg) before running again",
}


def storage_error(exc: OSError, where: Path | str | None = None) -> StorageError:
    """One line for an OSError: the file at fault (or ``where``), what went wrong, what to do."""
    # A rename names its source first; the destination is the file the user knows.
    path = exc.filename2 or exc.filename or where or "(unknown file)"
    what = exc.strerror or os.strerror(exc.errno or 0) or str(exc)
    advice = _ADVICE.get(exc.errno or 0)
    return StorageError(f"{os.fsdecode(path)}: {what}" + (f"; {advice}" if advice else ""))
