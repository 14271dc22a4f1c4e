"""What a build hands back: its wheels, moved into the outbox and described for the answer, or
the answer that the builder, not the project, is at fault.

Shipped to builders with the rest of this folder: stdlib-only, Python 2.7 and 3.4+, type
comments only.
"""

from __future__ import absolute_import, division, print_function

import hashlib
import os
import re
import shutil
import stat

if __package__:  # the local builder: imported as part of piwheels_ctl
    from . import elfdeps
else:  # on a builder: the files sent beside this one
    import elfdeps  # type: ignore[import-not-found, no-redef]

try:
    from typing import Any, Dict, List  # noqa: F401 - used in type comments
except ImportError:  # pragma: no cover - Python 2.7/3.4 builders without typing
    pass

# The names of wheels the agent collects; the controller checks them again as wheel names.
WHEEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+!-]*\.whl$")


def sha256_file(path):
    # type: (str) -> str
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def collect(wheels, outbox):
    # type: (str, str) -> List[Dict[str, Any]]
    """Move the wheels a build left into the outbox: regular files only, never a link, under a
    name a wheel can have (ASCII: Python 2.7's JSON cannot report bytes of another encoding)."""
    files = []
    for filename in sorted(os.listdir(wheels)):
        source = os.path.join(wheels, filename)
        st = os.lstat(source)
        if not WHEEL_NAME.match(filename) or not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            continue
        target = os.path.join(outbox, filename)
        shutil.copyfile(source, target)
        files.append({"name": filename, "size": os.path.getsize(target), "sha256": sha256_file(target)})
    return files


def add_elf(files, outbox):
    # type: (List[Dict[str, Any]], str) -> None
    """Each file's kinds of ELF file (machine, class): the facts by which the controller tells a
    tag the builder's compiler made from one the project wrote (``builds/tags.py``)."""
    for entry in files:
        entry["elf"] = elfdeps.wheel_machines(os.path.join(outbox, entry["name"]))


def add_deps(files, outbox):
    # type: (List[Dict[str, Any]], str) -> None
    """Each file's runtime libraries and their Debian packages here: a help, never a failure."""
    try:
        deps = elfdeps.wheel_deps([os.path.join(outbox, f["name"]) for f in files])
    except Exception:  # noqa: BLE001 - whatever the wheel holds, the build's result stands
        return
    for entry in files:
        entry["deps"] = deps.get(os.path.join(outbox, entry["name"]), [])


def builder_error(message):
    # type: (str) -> Dict[str, Any]
    """The answer to a build that failed for the builder's fault (no sandbox, too little disk)."""
    return {"status": "error", "error": message, "files": [], "duration": 0.0, "timed_out": False}
