"""The load check: every shared object of a wheel loaded as its interpreter will load it, in a
child process of that interpreter, before the wheel is handed over.

The wheel is unpacked into a fresh folder (``unpack``); the child (``child_argv``, in the
build's sandbox and without network: ``buildstep`` runs it) ``dlopen``s each shared object with
``RTLD_NOW`` through ctypes, then imports each extension module for real. A shared object the
loader refuses (a missing library, an undefined symbol, another architecture) is a failure, in
the loader's own words; what a module's own init raises (a missing Python dependency) is a
note. ``result`` reads the child's output into the answer's "load_check"
(``jobspec.LOAD_CHECK_KEYS``).

Shipped to builders with the rest of this folder: stdlib-only, Python 2.7 and 3.4+, type
comments only.
"""

from __future__ import absolute_import, division, print_function

import inspect
import json
import os
import re
import shutil
import tempfile
import zipfile

if __package__:  # the local builder: imported as part of piwheels_ctl
    from . import sandbox, supervise
else:  # on a builder: the files sent beside this one
    import sandbox  # type: ignore[import-not-found, no-redef]
    import supervise  # type: ignore[import-not-found, no-redef]

try:
    from typing import Any, Dict, List, Optional  # noqa: F401 - used in type comments
except ImportError:  # pragma: no cover - Python 2.7/3.4 builders without typing
    pass

# Where a wheel holds more than this, it is not unpacked (a wheel's size is the controller's to
# check; this keeps a hostile one from filling the builder's disk).
MAX_UNPACKED = 4 * 1024 * 1024 * 1024
# The check's own output: more than this is cut (a module that prints without end).
MAX_OUTPUT = 1 << 20
# A note or a failure is kept to this many characters.
MAX_MESSAGE = 500
# The line that starts each of the child's reports.
MARK = "@piwheels-loadcheck "


# How long the check of one wheel may take, at most (a module whose init hangs is a note).
TIMEOUT = 300.0


class WheelError(Exception):
    """The wheel cannot be unpacked here (not a zip, an unsafe member, too large): the controller's
    verification refuses such a wheel (``invalid-wheel``), not the load check."""


def unpack(wheel, folder):
    # type: (Any, str) -> List[str]
    """Unpack the wheel ``wheel`` (a path or an open file) into the new folder ``folder``: regular
    files only, readable by all (the check may run as the build's uid); the members that are
    shared objects, by name and ELF header."""
    os.mkdir(folder, 0o755)
    objects = []
    total = 0
    try:
        archive = zipfile.ZipFile(wheel)
    except (zipfile.BadZipfile, IOError, OSError) as exc:
        raise WheelError("not a wheel: %s" % (exc,))
    with archive:
        for info in archive.infolist():
            name = info.filename
            if name.endswith("/"):
                continue
            parts = name.split("/")
            if any(part in ("", ".", "..") for part in parts) or "\\" in name or "\x00" in name:
                raise WheelError("refused member name %r" % (name,))
            total += info.file_size
            if total > MAX_UNPACKED:
                raise WheelError("more than %d bytes unpacked" % MAX_UNPACKED)
            target = os.path.join(folder, *parts)
            parent = os.path.dirname(target)
            if not os.path.isdir(parent):
                os.makedirs(parent, 0o755)
            with archive.open(info) as source:
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                fd = os.open(target, flags, 0o644)
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(source, out)
            if is_shared_object(target):
                objects.append(name)
    return objects


def is_shared_object(path):
    # type: (str) -> bool
    """True for an ELF shared object named as one (``x.so``, ``libx.so.1``): what ``dlopen`` is
    for (not an executable, which glibc refuses to load)."""
    if not re.search(r"\.so(\.[0-9.]+)?$", os.path.basename(path)):
        return False
    with open(path, "rb") as f:
        head = f.read(18)
    # e_type 3 (ET_DYN), in either byte order.
    return head[:4] == b"\x7fELF" and head[16:18] in (b"\x03\x00", b"\x00\x03")


def _child(folder):  # pragma: no cover - run in the child interpreter, as its own source
    # type: (str) -> None
    """Load every shared object under ``folder``, then import every extension module; report
    (MARK + JSON, a line each) "begin" before each import, so that a crash is known by the module
    it happened in, and at the end "done" with the failures and notes, as (member, message)."""
    import ctypes
    import os
    import re
    import sys
    import traceback

    def report(**fields):
        # type: (**Any) -> None
        sys.stdout.write(MARK + json.dumps(fields) + "\n")
        sys.stdout.flush()

    try:
        import importlib.machinery

        suffixes = list(importlib.machinery.EXTENSION_SUFFIXES)
    except ImportError:  # Python 2.7
        import imp

        suffixes = [suffix for suffix, _, kind in imp.get_suffixes() if kind == imp.C_EXTENSION]
    skip = set(sys.argv[2:])
    objects = []
    for top, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(top, name)
            if is_shared_object(path):
                objects.append(os.path.relpath(path, folder).replace(os.sep, "/"))
    mode = getattr(os, "RTLD_NOW", 2) | getattr(os, "RTLD_LOCAL", 0)
    pending, handles, errors = list(objects), [], {}
    while pending:  # again while some load: a library can need another of the wheel's first
        progress = False
        for member in list(pending):
            try:
                handles.append(ctypes.CDLL(os.path.join(folder, member), mode))
            except OSError as exc:
                errors[member] = str(exc)
            else:
                pending.remove(member)
                errors.pop(member, None)
                progress = True
        if not progress:
            break
    modules = []
    for member in objects:
        base = member.rsplit("/", 1)[-1]
        for suffix in sorted(suffixes, key=len, reverse=True):
            if base.endswith(suffix) and re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", base[: -len(suffix)]):
                parts = member[: -len(suffix)].split("/")
                if all(re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", part) for part in parts):
                    modules.append((member, ".".join(parts)))
                break
    sys.path.insert(0, folder)
    imported = {}  # type: Dict[str, Optional[str]]
    for member, module in modules:
        if member in skip:
            continue
        report(begin=member)
        try:
            __import__(module)
            imported[member] = None
        except BaseException as exc:  # noqa: BLE001 - whatever the module's init raises is reported
            if isinstance(exc, KeyboardInterrupt):
                raise
            line = traceback.format_exception_only(type(exc), exc)[-1].strip()
            imported[member] = line
    failures, notes = [], []
    for member in objects:
        if member in skip:
            continue
        if member in errors and imported.get(member, "") is not None:
            # Not loaded alone, and not imported either (a package's init can load what it
            # needs first): the loader's refusal is the failure.
            failures.append([member, errors[member]])
        elif imported.get(member):
            notes.append([member, imported[member]])
    # All in the last line: a module that prints without end cannot push it out of the output.
    report(done=True, failures=failures, notes=notes)


def child_argv(python, folder, skip=()):
    # type: (str, str, Any) -> List[str]
    """The command that checks the unpacked wheel in ``folder`` with ``python`` (skipping the
    members ``skip``): the interpreter as a user runs it, without this agent's environment."""
    source = "import json, os, re\nMARK = %r\n%s\n%s\n_child(%r)\n" % (
        MARK, inspect.getsource(is_shared_object), inspect.getsource(_child), folder)  # fmt: skip
    return [python, "-E", "-s", "-c", source, folder] + list(skip)


def read_reports(output):
    # type: (bytes) -> List[Dict[str, Any]]
    """The child's reports in its output (what else it printed is the modules' own)."""
    reports = []
    for line in output.decode("utf-8", "replace").splitlines():
        if line.startswith(MARK):
            try:
                value = json.loads(line[len(MARK) :])
            except ValueError:
                continue
            if isinstance(value, dict):
                reports.append(value)
    return reports


def _message(folder, member, text):
    # type: (str, str, str) -> str
    """``text`` without the check's folder, starting with the member it is about."""
    text = str(text).replace(folder.rstrip("/") + "/", "")
    if not text.startswith(member + ":"):
        text = "%s: %s" % (member, text)
    return text[:MAX_MESSAGE]


def result(folder, reports):
    # type: (str, List[Dict[str, Any]]) -> Dict[str, Any]
    """The answer's "load_check" from the child's ``reports`` on the unpacked wheel in ``folder``."""
    done = [r for r in reports if r.get("done")]
    last = done[-1] if done else {}
    failures = [_message(folder, str(m), str(text)) for m, text in last.get("failures") or ()]
    notes = [_message(folder, str(m), str(text)) for m, text in last.get("notes") or ()]
    return {"ok": not failures, "failures": failures, "notes": notes}


def last_begun(reports):
    # type: (List[Dict[str, Any]]) -> Optional[str]
    """The member the child began importing last, if it did not finish."""
    begun = [str(r["begin"]) for r in reports if "begin" in r]
    return begun[-1] if begun and not any(r.get("done") for r in reports) else None


def merge(results):
    # type: (List[Dict[str, Any]]) -> Dict[str, Any]
    """One "load_check" of several wheels'."""
    failures = [f for r in results for f in r["failures"]]
    notes = [n for r in results for n in r["notes"]]
    return {"ok": not failures, "failures": failures, "notes": notes}


def log_lines(check):
    # type: (Dict[str, Any]) -> str
    """The check's outcome for the build's log (``failures/rules.py`` reads the failures)."""
    lines = ["[piwheels] import-failed: %s" % f for f in check["failures"]]
    lines += ["[piwheels] import note: %s" % n for n in check["notes"]]
    if check["ok"] and not check["notes"]:
        lines.append("[piwheels] load check: every compiled module loaded")
    return "\n".join(lines) + "\n"


def check(python, wheels, work, kind, uid, personality, timeout, memory_mb, max_procs):
    # type: (str, List[Any], str, str, Optional[int], bool, float, int, int) -> Dict[str, Any]
    """The "load_check" of ``wheels`` (paths or open files) with the interpreter ``python``, each
    unpacked into a fresh folder in ``work`` and checked in the sandbox ``kind`` (bubblewrap with
    no network, or the build's ``uid``) within the build's limits. OSError: the check could not
    be started (the builder's fault)."""
    results = []
    for wheel in wheels:
        base = tempfile.mkdtemp(prefix="loadcheck-", dir=work)
        try:
            os.chmod(base, 0o755)  # noqa: S103 - the build's uid reads the unpacked wheel, nothing else
            folder = os.path.join(base, "wheel")
            try:
                objects = unpack(wheel, folder)
            except WheelError as exc:  # not for this check to refuse: the controller's verify does
                note = "not checked, the wheel cannot be unpacked: %s" % (exc,)
                results.append({"ok": True, "failures": [], "notes": [note]})
                continue
            if objects:
                limits = (min(timeout, TIMEOUT), memory_mb, max_procs)
                results.append(_check_folder(python, folder, kind, uid, personality, limits))
        finally:
            supervise.remove_tree(base)
    return merge(results) if results else {"ok": True, "failures": [], "notes": []}


def _check_folder(python, folder, kind, uid, personality, limits):
    # type: (str, str, str, Optional[int], bool, Any) -> Dict[str, Any]
    """Run the child on ``folder`` until it finishes; a module that takes the interpreter down
    (a crash in its init) is noted and skipped, and the rest checked again."""
    skip = []  # type: List[str]
    crashes = []  # type: List[str]
    while True:
        reports, finished = _run_child(python, folder, kind, uid, personality, limits, skip)
        if any(r.get("done") for r in reports):
            break
        member = last_begun(reports)
        if finished.timed_out:
            crashes.append("%s: the load check took more than %d s" % (member or "the wheel", limits[0]))
            break
        if member is None or member in skip:
            crashes.append("the load check ended early (exit status %s)" % (finished.returncode,))
            break
        crashes.append("%s: the interpreter ended (exit status %s) while importing it"
                       % (member, finished.returncode))  # fmt: skip
        skip.append(member)
    answer = result(folder, reports)
    answer["notes"] += crashes
    return answer


def _run_child(python, folder, kind, uid, personality, limits, skip):
    # type: (str, str, str, Optional[int], bool, Any, List[str]) -> Any
    """The child's reports and how it ended."""
    command = child_argv(python, folder, skip)
    env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "HOME": folder,
           "LC_ALL": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip
    if kind == "bwrap":  # the build's walls, and no network at all: not even its proxy
        read_only = sandbox.interpreter_dirs(python) + [os.path.dirname(folder)]
        argv = sandbox.bwrap_command(command, folder, [], read_only, [], uid)
    else:
        argv = command
    timeout, memory_mb, max_procs = limits
    with tempfile.TemporaryFile() as out:
        finished = supervise.run(argv, env, folder, out, timeout, memory_mb, max_procs, MAX_OUTPUT,
                                 uid=uid if kind == "user" else None, personality=personality)  # fmt: skip
        out.seek(0)
        return read_reports(out.read()), finished
