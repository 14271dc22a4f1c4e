"""The widths of the columns the upstream's values go into, checked before they reach the database."""

from __future__ import annotations

from typing import Any

from ..db.models import Project, Version


def _length(column: Any) -> int:
    """The length of a String column: what the database (PostgreSQL strictly) will store."""
    return int(column.type.length)


NAME_MAX = _length(Project.name)
DISPLAY_NAME_MAX = _length(Project.display_name)
VERSION_MAX = _length(Version.version)
FILENAME_MAX = _length(Version.sdist_filename)
SHA256_MAX = _length(Version.sdist_sha256)
REQUIRES_PYTHON_MAX = _length(Version.requires_python)
