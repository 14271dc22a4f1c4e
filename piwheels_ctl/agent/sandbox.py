"""The walls around one build: what it sees, who it runs as, what it may reach, how much it may use.

Shipped to builders with the rest of this folder, so it must stay stdlib-only and run on
Python 2.7 and 3.4+: no f-strings, no annotations (type comments only).

Two kinds of sandbox, the stronger one wherever the machine allows it:

``bwrap``
    bubblewrap: its own mount, PID, IPC, UTS and network namespaces. The build sees the
    system's programs and libraries read-only, its interpreter, its own work folder (the only
    place it may write) and nothing else: no data folder, no keys, no agent, no other builds,
    no HOME. Its network is a proxy (``buildnet``). When the sandbox's PID 1 dies, the kernel
    ends every process of the build, daemons included; ``--die-with-parent`` ties PID 1 to us.
    An unprivileged agent's build gets a user namespace of its own; an agent running as root
    gives each build a uid of its own (``setpriv``), never root's.
``user``
    The fallback where no namespaces can be made (old kernels, qemu-user): an agent running as
    root runs each build as a uid of its own that owns nothing anywhere, and ends every process
    of that uid when the build ends.

Running the build within its limits, and ending it, is ``supervise``'s part.
"""

from __future__ import absolute_import, division, print_function

import errno
import fcntl
import os
import random
import stat
import subprocess

if __package__:  # the local builder: imported as part of piwheels_ctl
    from . import supervise
else:  # on a builder: the files sent beside this one
    import supervise  # type: ignore[import-not-found, no-redef]

try:
    from typing import Any, Callable, Dict, List, Optional, Set, Tuple  # noqa: F401 - type comments
except ImportError:  # pragma: no cover - Python 2.7/3.4 builders without typing
    pass

BWRAP = "bwrap"
KINDS = ("bwrap", "user")
# /etc entries a build needs (certificates, users, the dynamic linker, locale data); the rest
# of /etc (the farm's configuration, ssh host keys, passwords) stays out of sight.
ETC_ENTRIES = (
    "alternatives", "ca-certificates", "ca-certificates.conf", "debian_version", "gai.conf",
    "group", "host.conf", "hosts", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime",
    "lsb-release", "mime.types", "nsswitch.conf", "os-release", "passwd", "pki", "protocols",
    "services", "ssl", "timezone",
)  # fmt: skip
# The uids an agent running as root gives its builds, one each: far above any real user's and
# above the ranges systemd-nspawn and DynamicUser= take; no password entry names them.
BUILD_UIDS = (2000000000, 4096)
UID_LOCKS = "/run/piwheels-ctl/build-uids"
# Not /opt: a farm installs itself there (the master role's virtualenv).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


class SandboxError(Exception):
    """No sandbox can be made here: the builder, not the build, is at fault."""


# -- which sandbox ----------------------------------------------------------------------------


_PROBED = {}  # type: Dict[str, Optional[str]]


def _bwrap_works():
    # type: () -> Optional[str]
    """None if bubblewrap can make a sandbox here, else why not (asked once per process)."""
    if BWRAP not in _PROBED:
        _PROBED[BWRAP] = _try_bwrap()
    return _PROBED[BWRAP]


def _try_bwrap():
    # type: () -> Optional[str]
    command = [BWRAP] + _unshare(os.geteuid() == 0) + [
        "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc", "true",
    ]  # fmt: skip
    try:
        with open(os.devnull, "wb") as devnull:
            proc = subprocess.Popen(command, stdout=devnull, stderr=subprocess.PIPE)
            _out, err = proc.communicate()
    except OSError as exc:
        return "bwrap not found (%s)" % (exc.strerror,)
    if proc.returncode != 0:
        return "bwrap cannot make namespaces: %s" % err.decode("utf-8", "replace").strip()[-200:]
    return None


def choose(wanted):
    # type: (str) -> Tuple[str, str]
    """The kind of sandbox to use (``wanted`` is "auto" or a kind) and a line saying why."""
    problem = _bwrap_works() if wanted in ("auto", "bwrap") else "not wanted"
    if problem is None:
        who = "a uid of its own" if os.geteuid() == 0 else "user namespace"
        return "bwrap", "bubblewrap namespaces (%s)" % who
    if wanted == "bwrap":
        raise SandboxError(problem)
    if os.geteuid() != 0:
        raise SandboxError("no sandbox: %s, and the uid fallback needs the agent to run as root" % problem)
    return "user", "a uid of its own, no namespaces (%s)" % problem


# What the refusal of an interpreter the builds' uids cannot read tells the operator to do.
UNREADABLE_FIX = (
    "an agent running as root builds as a uid of its own, which owns nothing and is in no "
    "group: use an interpreter every user can read (Debian's /usr/bin/python3, or one "
    "installed under /usr/local or /opt), not one under a private home such as /root"
)


def unreadable_by_builds(python, kind, stdlib=None):
    # type: (str, str, Optional[str]) -> Optional[str]
    """Why a build's uid of its own cannot run ``python`` (and read ``stdlib``, its standard
    library's folder) in a sandbox of ``kind``: the first folder on the way it may not enter,
    or a file it may not read; None when it can. Only the bits for other users count: that uid
    owns nothing and is in no group. bubblewrap opens the folders above the ones it binds in."""
    real = os.path.realpath(python)
    folders = [os.path.dirname(os.path.abspath(python)), os.path.dirname(real)]
    if stdlib:
        folders.append(os.path.realpath(stdlib))
    opened = set()  # type: Set[str]
    if kind == BWRAP:
        for bound in interpreter_dirs(python):
            parent = os.path.dirname(bound)
            while parent not in opened and parent != os.path.dirname(parent):
                opened.add(parent)
                parent = os.path.dirname(parent)
    for folder in folders:
        path = os.sep
        for part in folder.split(os.sep):
            path = os.path.join(path, part)
            if path in opened or path == os.sep:
                continue
            try:
                mode = os.stat(path).st_mode
            except OSError as exc:
                return "%s: %s" % (path, exc.strerror)
            if not mode & stat.S_IXOTH:
                return "%s is mode %03o: other users may not enter it" % (path, stat.S_IMODE(mode))
    try:
        mode = os.stat(real).st_mode
    except OSError as exc:
        return "%s: %s" % (real, exc.strerror)
    if mode & (stat.S_IROTH | stat.S_IXOTH) != stat.S_IROTH | stat.S_IXOTH:
        return "%s is mode %03o: other users may not run it" % (real, stat.S_IMODE(mode))
    return None


def lease_uid():
    # type: () -> Tuple[int, Any]
    """A uid no other build on this machine holds, and the open lock that holds it.

    An agent running as root gives every build a uid of its own from ``BUILD_UIDS``: a user
    that owns nothing anywhere, whose processes all belong to that one build, and whose
    process count is that build's alone.
    """
    _makedirs(UID_LOCKS, 0o700)  # one folder for the machine: uids are the machine's
    first, count = BUILD_UIDS
    start = random.randrange(count)  # noqa: S311 - spreads agents over the uids; not a secret
    for offset in range(count):
        uid = first + (start + offset) % count
        lock = open(os.path.join(UID_LOCKS, str(uid)), "a")  # noqa: SIM115 - held by the caller
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (IOError, OSError):
            lock.close()
            continue
        supervise.kill_all_of(uid)  # whatever a killed agent's build of this uid left behind
        return uid, lock
    raise SandboxError("all %d build uids from %d are taken" % (count, first))


def _makedirs(path, mode):
    # type: (str, int) -> None
    try:
        os.makedirs(path, mode)
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            raise


# -- the command -------------------------------------------------------------------------------


def interpreter_dirs(python):
    # type: (str) -> List[str]
    """The folders an interpreter needs: its prefix, and for a virtualenv the base Python's too.

    Read from the file system, never by running the interpreter outside the sandbox.
    """
    path = os.path.abspath(which(python))
    dirs = [os.path.dirname(os.path.dirname(path)), os.path.dirname(os.path.dirname(os.path.realpath(path)))]
    try:
        with open(os.path.join(dirs[0], "pyvenv.cfg")) as cfg:
            for line in cfg:
                key, _, value = line.partition("=")
                if key.strip() == "home":  # the base interpreter's bin folder
                    home = value.strip()
                    dirs += [os.path.dirname(home), os.path.dirname(os.path.realpath(home))]
    except (IOError, OSError):
        pass  # not a virtualenv
    return dirs


def canonical_python(python):
    # type: (str) -> str
    """``python`` as a build runs it: its folder's real path (no ``..``, no symlinked folder the
    sandbox would not show), and for an interpreter that is not a virtualenv's its file's real
    path too (a virtualenv's link is what makes it one, and is kept)."""
    path = os.path.abspath(which(python))
    folder = os.path.realpath(os.path.dirname(path))
    linked = os.path.join(folder, os.path.basename(path))
    if os.path.isfile(os.path.join(os.path.dirname(folder), "pyvenv.cfg")):
        return linked
    return os.path.realpath(linked)


def which(program):
    # type: (str) -> str
    if os.sep in program:
        return program
    for folder in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep):
        candidate = os.path.join(folder, program)
        if os.access(candidate, os.X_OK):
            return candidate
    return program


def bwrap_command(command, work, writable, read_only, sockets, uid):
    # type: (List[str], str, List[str], List[str], List[Tuple[str, str]], Optional[int]) -> List[str]
    """``command`` in bubblewrap: the system and ``read_only`` read-only, ``writable`` writable.

    ``sockets`` are (outside, inside) paths of Unix sockets to pass in; ``uid`` is the user to
    become when the agent runs as root.
    """
    argv = [BWRAP] + _unshare(uid is not None)
    argv += [
        "--die-with-parent", "--new-session", "--hostname", "build", "--proc", "/proc", "--dev", "/dev",
    ]  # fmt: skip
    argv += _perms("1777") + ["--tmpfs", "/tmp", "--tmpfs", "/run"]  # noqa: S108 - the sandbox's own /tmp
    argv += _perms("0755") + ["--dir", "/etc"] + _perms("0755") + ["--dir", "/var"]
    argv += _perms("1777") + ["--dir", "/var/tmp"]  # noqa: S108 - the sandbox's own
    for folder in SYSTEM_DIRS:
        if os.path.islink(folder):  # merged /usr: /bin -> usr/bin
            argv += ["--symlink", os.readlink(folder), folder]
        elif os.path.isdir(folder):
            argv += ["--ro-bind", folder, folder]
    for entry in ETC_ENTRIES:
        argv += ["--ro-bind-try", "/etc/" + entry, "/etc/" + entry]
    read_only = [
        f for f in _outermost(read_only) if not any(f == d or f.startswith(d + "/") for d in SYSTEM_DIRS)
    ]
    # bwrap makes the folders above a mount point for root only: the build's uid must pass them.
    parents = set()  # type: Set[str]
    for folder in read_only + writable:
        parent = os.path.dirname(folder)
        while parent not in ("/", "") and parent not in parents:
            parents.add(parent)
            parent = os.path.dirname(parent)
    for parent in sorted(parents):
        argv += _perms("0755") + ["--dir", parent]
    for folder in read_only:
        argv += ["--ro-bind-try", folder, folder]
    for folder in writable:
        argv += ["--bind", folder, folder]
    for outside, inside in sockets:
        argv += ["--ro-bind", outside, inside]
    argv += ["--chdir", work]
    if uid is not None:
        argv += ["--", "setpriv", "--reuid=%d" % uid, "--regid=%d" % uid,
                 "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--"]  # fmt: skip
    else:
        argv += ["--"]
    return argv + command


def _unshare(as_root):
    # type: (bool) -> List[str]
    """The namespaces to make: an unprivileged agent's build gets a user namespace as well; as
    root, none (its only user would be root): ``setpriv`` drops to the build's uid instead."""
    if not as_root:
        return ["--unshare-all"]
    return ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]


_VERSION = []  # type: List[Tuple[int, ...]]


def _perms(mode):
    # type: (str) -> List[str]
    """``--perms MODE`` for the next folder, where bubblewrap has it (0.5 and later).

    Newer bubblewrap makes the folders it creates for root only unless told; older ones make
    them 0755 and know no ``--perms``.
    """
    if not _VERSION:
        try:
            out = subprocess.check_output([BWRAP, "--version"]).decode("ascii", "replace")
            _VERSION.append(tuple(int(p) for p in out.split()[-1].split(".")[:3]))
        except (OSError, subprocess.CalledProcessError, ValueError, IndexError):
            _VERSION.append((0,))
    return ["--perms", mode] if _VERSION[0] >= (0, 5) else []


def _outermost(folders):
    # type: (List[str]) -> List[str]
    """The folders that are not inside another of ``folders``, sorted."""
    result = []  # type: List[str]
    for folder in sorted(set(os.path.normpath(f) for f in folders if f)):
        if not any(folder == r or folder.startswith(r.rstrip("/") + "/") for r in result):
            result.append(folder)
    return result
