"""The folders a build runs in: its locked throwaway folder, its project's cache folders, whose
they are, and the user the agent acts as when it writes for the SSH user.

Shipped to builders with the rest of this folder: stdlib-only, Python 2.7 and 3.4+, type
comments only.
"""

from __future__ import absolute_import, division, print_function

import contextlib
import errno
import fcntl
import os
import stat
import tempfile
import time

if __package__:  # the local builder: imported as part of piwheels_ctl
    from . import supervise
else:  # on a builder: the files sent beside this one
    import supervise  # type: ignore[import-not-found, no-redef]

try:
    from typing import Any, Iterator, List, Optional  # noqa: F401 - used in type comments
except ImportError:  # pragma: no cover - Python 2.7/3.4 builders without typing
    pass


def makedirs(path):
    # type: (str) -> None
    try:
        os.makedirs(path)
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            raise


def free_space_mb(path):
    # type: (str) -> int
    st = os.statvfs(path)
    return int(st.f_bavail * st.f_frsize // (1024 * 1024))


# The kernel's load averages; a module attribute so that a test can point it at a fake file.
LOADAVG = "/proc/loadavg"


def load_per_cpu():
    # type: () -> Optional[float]
    """The 1-minute load average divided by the CPUs (None: unreadable here)."""
    try:
        with open(LOADAVG) as f:
            load = float(f.read().split()[0])
    except (IOError, OSError, ValueError, IndexError):
        return None
    return load / (os.sysconf("SC_NPROCESSORS_ONLN") or 1)


def invoking_user():
    # type: () -> Optional[Any]
    """(uid, gid) of the user who ran this agent through sudo, or None when not run so.

    On builders where no namespaces can be made (qemu-user, old kernels) the builder role lets
    the SSH user run this agent, root-owned, as root: the uid fallback needs root.
    """
    uid = os.environ.get("SUDO_UID", "")
    if os.geteuid() != 0 or not uid.isdigit() or int(uid) == 0:
        return None
    gid = os.environ.get("SUDO_GID", "")
    return int(uid), int(gid) if gid.isdigit() else int(uid)


@contextlib.contextmanager
def as_user(user):
    # type: (Optional[Any]) -> Iterator[None]
    """Act as ``user`` (uid, gid) meanwhile: what the agent writes for the SSH user it writes as
    that user, so that no path the user chose can make root write anywhere else."""
    if user is None:
        yield
        return
    os.setegid(user[1])
    os.seteuid(user[0])
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def not_root_owned(path):
    # type: (str) -> Optional[str]
    """None if ``path`` and every folder above it are root's and writable by root only, else why not."""
    real = os.path.realpath(path)
    current = real
    while True:
        try:
            st = os.stat(current)
        except OSError as exc:
            return "%s: %s" % (current, exc.strerror)
        # A sticky folder (/tmp) is fine above root's own: nobody else can rename root's entries.
        sticky = current != real and st.st_mode & 0o1000
        if st.st_uid != 0 or (st.st_mode & 0o022 and not sticky):
            mode = st.st_mode & 0o7777
            return "%s is not root's alone (owner uid %d, mode %o)" % (current, st.st_uid, mode)
        if current == "/":
            return None
        current = os.path.dirname(current)


def check_root_folders(work_root, ccache_dir, deps_cache):
    # type: (str, Optional[str], Optional[str]) -> Optional[str]
    """None if a build through sudo may use these folders (root's own, for the build's uid), else
    why not. A new deps cache in root's own folder is made (builder roles from before the cache)."""
    parent = os.path.dirname(deps_cache or "/")
    if deps_cache and not os.path.exists(deps_cache) and not_root_owned(parent) is None:
        makedirs(deps_cache)
    for folder in [work_root] + [f for f in (ccache_dir, deps_cache) if f]:
        problem = not_root_owned(folder)
        if problem:
            return problem
    return None


def chown_tree(folder, uid):
    # type: (str, int) -> None
    """Give ``folder`` (a cache an earlier build of the project wrote) to ``uid``, but for files
    with more than one name: a hard link a build made to a file it could not write (where the
    kernel lets it) is never given away. (The compiler wrappers are such files: they are run,
    not written.)"""
    for root, dirs, names in os.walk(folder):
        os.lchown(root, uid, uid)
        for entry in [os.path.join(root, e) for e in dirs + names]:
            st = os.lstat(entry)
            if stat.S_ISDIR(st.st_mode) or st.st_nlink == 1:
                os.lchown(entry, uid, uid)


def sweep(work_root):
    # type: (str) -> None
    """Remove the folders of builds whose agent is gone (killed): nobody holds their lock.

    A build's folder appears under its ``build-`` name only once its lock is held (made as
    ``.new-``, locked, then renamed); a ``.new-`` folder an hour old was left by a killed agent.
    """
    for entry in os.listdir(work_root):
        folder = os.path.join(work_root, entry)
        if not os.path.isdir(folder):
            continue
        if entry.startswith(".new-") and time.time() - os.path.getmtime(folder) > 3600:
            supervise.remove_tree(folder)
            continue
        if not entry.startswith("build-"):
            continue
        try:
            with open(os.path.join(folder, ".lock"), "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (IOError, OSError):
            continue  # a build in progress
        supervise.remove_tree(folder)


@contextlib.contextmanager
def locked_workdir(work_root):
    # type: (str) -> Iterator[str]
    """A new folder of one build in ``work_root``, locked meanwhile and removed after (the folders
    of builds whose agent is gone are removed first)."""
    sweep(work_root)
    new = tempfile.mkdtemp(prefix=".new-", dir=work_root)
    # Held while the build runs: a later agent removes the folders whose lock nobody holds.
    with open(os.path.join(new, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        work = os.path.join(work_root, "build-" + os.path.basename(new)[len(".new-") :])
        os.rename(new, work)
        try:
            yield work
        finally:
            supervise.remove_tree(work)


@contextlib.contextmanager
def project_cache(root, name):
    # type: (Optional[str], str) -> Iterator[Optional[str]]
    """The project's own folder of the cache in ``root`` (compiler or build requirements) while
    no other build of the project uses it, else None.

    One folder per project: a build can poison only its own project's cached objects and
    wheels. Two builds of one project (two versions, two ABIs) run as two uids: the second
    builds without a cache rather than fight over the folder's owner.
    """
    if not root:
        yield None
        return
    folder = os.path.join(root, "projects", name.lower())
    makedirs(folder)
    with open(folder + ".lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (IOError, OSError):
            yield None  # another build of this project has it now
            return
        os.utime(folder + ".lock", None)  # last used: pruning drops the longest unused first
        yield folder
