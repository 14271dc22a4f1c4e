"""What a project's wheels need at run time: the apt packages (and the libraries with no known
package) that their compiled modules link and do not contain, as the builders reported them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from packaging.version import parse as parse_version

from ..db.models import File, Version

# Packages every Debian system has (C library, compiler runtime): not worth an apt line.
ALWAYS_THERE = frozenset({"libc6", "libgcc-s1", "libgcc1"})


def newest_with_wheels(versions: Iterable[Version], version: str | None = None) -> Version | None:
    """The newest of ``versions`` that has wheels (only ``version``, a normalised one, if given)."""
    built = [row for row in versions if row.files and version in (None, row.version)]
    return max(built, key=lambda row: parse_version(row.version)) if built else None


def needs(files: list[File]) -> dict[str, Any]:
    """The apt packages (and libraries without a known package) that ``files`` need at run time."""
    packages: dict[str, set[str]] = {}
    unknown: set[str] = set()
    for file in files:
        for dep in file.deps or []:
            package, library = dep.get("package"), str(dep.get("library"))
            if package is None:
                unknown.add(library)
            elif package not in ALWAYS_THERE:
                packages.setdefault(str(package), set()).add(library)
    names = sorted(packages)
    return {
        "packages": [{"package": p, "libraries": sorted(packages[p])} for p in names],
        "unknown_libraries": sorted(unknown),
        "apt": f"sudo apt install {' '.join(names)}" if names else None,
        "files": [{"filename": f.filename, "deps": f.deps} for f in files],
    }
