"""The builder's cache of build requirements: each project's frontend cache, kept to a size.

A build's frontend (uv or pip) keeps the wheels of the build requirements it fetched
(setuptools, Cython, scikit-build-core, cmake, ninja, ...) in the project's own folder of this
cache, so the next build of the project makes its isolated build environment without
downloading them again. The build writes that folder from inside its sandbox, so a folder
belongs to one project: a hostile build can spoil its own project's later builds, never
another project's (see docs/security.md). This module keeps all projects' folders together
under a size, dropping the longest unused first.

Shipped to builders with the rest of this folder: stdlib-only, Python 2.7 and 3.4+, type
comments only.
"""

from __future__ import absolute_import, division, print_function

import fcntl
import os

if __package__:  # the local builder: imported as part of piwheels_ctl
    from . import supervise
else:  # on a builder: the files sent beside this one
    import supervise  # type: ignore[import-not-found, no-redef]

try:
    from typing import List, Tuple  # noqa: F401 - used in type comments
except ImportError:  # pragma: no cover - Python 2.7/3.4 builders without typing
    pass


def folder_size(folder):
    # type: (str) -> int
    """The bytes the files under ``folder`` take on disk (links not followed)."""
    total = 0
    for root, _dirs, names in os.walk(folder):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass  # removed meanwhile
    return total


def prune(root, max_mb):
    # type: (str, int) -> List[str]
    """Remove the longest unused projects' folders of ``root`` until all together take at most
    ``max_mb``; a folder a build is using is left alone. The projects removed, oldest first."""
    projects = os.path.join(root, "projects")
    try:
        names = [n for n in os.listdir(projects) if os.path.isdir(os.path.join(projects, n))]
    except OSError:
        return []
    entries = []  # type: List[Tuple[float, str, int]]
    for name in names:
        folder = os.path.join(projects, name)
        try:
            used = os.path.getmtime(folder + ".lock")
        except OSError:
            used = 0.0
        entries.append((used, name, folder_size(folder)))
    total = sum(size for _used, _name, size in entries)
    removed = []  # type: List[str]
    for _used, name, size in sorted(entries):
        if total <= max_mb * 1024 * 1024:
            break
        folder = os.path.join(projects, name)
        try:
            with open(folder + ".lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                supervise.remove_tree(folder)
                os.mkdir(folder)  # empty again: the lock file stays beside it
        except (IOError, OSError):
            continue  # a build of that project has it now
        total -= size
        removed.append(name)
    return removed
