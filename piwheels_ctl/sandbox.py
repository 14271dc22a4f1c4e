"""The walls around one build: what it sees, who it runs as, what it may reach, how much it may use.

Sent to builders beside ``agent.py`` and imported by it, so like the agent it must stay
stdlib-only and run on Python 2.7 and 3.4+: no f-strings, no annotations (type comments only).

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

Limits hold for the whole build: a watchdog sums the memory and counts the processes of the
build's process tree (``RLIMIT_NPROC`` is the backstop), and the log is cut as it is written.
"""

from __future__ import absolute_import, division, print_function

import collections
import errno
import fcntl
import os
import random
import select
import shutil
import signal
import stat
import subprocess
import time

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
WATCH_INTERVAL = 0.25
KILL_GRACE = 5.0
# RLIMIT_NPROC is set this far above the build's process limit, so that the watchdog, which
# sees the count pass the limit, ends the build and names the cause: the rlimit is the backstop.
NPROC_MARGIN = 16
HEAD_BYTES_SHARE = 4  # a cut log keeps 1/4 of its budget from the start, 3/4 from the end


class SandboxError(Exception):
    """No sandbox can be made here: the builder, not the build, is at fault."""


# -- which sandbox ----------------------------------------------------------------------------


def _bwrap_works():
    # type: () -> Optional[str]
    """None if bubblewrap can make a sandbox here, else why not."""
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
        _kill_all_of(uid)  # whatever a killed agent's build of this uid left behind
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
    path = os.path.abspath(_which(python))
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


def _which(program):
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


# -- running it: the log, the watchdog, the end ------------------------------------------------


class CappedLog(object):
    """A log file that never holds more than ``max_bytes``: its head, a marker, its tail."""

    def __init__(self, f, max_bytes):
        # type: (Any, int) -> None
        self.f = f
        self.head_left = max_bytes // HEAD_BYTES_SHARE
        self.tail_max = max_bytes - self.head_left
        self.tail = collections.deque()  # type: Any
        self.tail_size = 0
        self.cut = 0

    def write(self, data):
        # type: (bytes) -> None
        if self.head_left > 0:
            head, data = data[: self.head_left], data[self.head_left :]
            self.f.write(head)
            self.f.flush()  # the head is on disk as it comes: a build's progress can be read
            self.head_left -= len(head)
        if not data:
            return
        self.tail.append(data)
        self.tail_size += len(data)
        while self.tail_size - len(self.tail[0]) >= self.tail_max:
            self.cut += len(self.tail[0])
            self.tail_size -= len(self.tail.popleft())

    def close(self):
        # type: () -> None
        tail = b"".join(self.tail)
        extra = max(0, len(tail) - self.tail_max)
        self.cut += extra
        if self.cut:
            self.f.write(("\n[... %d bytes cut by piwheels-ctl ...]\n" % self.cut).encode())
        self.f.write(tail[extra:])
        self.f.flush()


class Usage(object):
    """The memory and processes of a build's whole process tree."""

    def __init__(self, rss_mb, processes):
        # type: (int, int) -> None
        self.rss_mb = rss_mb
        self.processes = processes


PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _processes():
    # type: () -> Dict[int, Tuple[int, int]]
    """Every process on this machine: pid -> (parent pid, owner uid)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            table[int(entry)] = (ppid, os.stat("/proc/" + entry).st_uid)
        except (IOError, OSError, IndexError, ValueError):
            continue  # ended meanwhile
    return table


def members(root_pid, uid):
    # type: (int, Optional[int]) -> List[int]
    """The build's processes: the tree under ``root_pid`` and, with ``uid``, everything of that user."""
    table = _processes()
    children = collections.defaultdict(list)  # type: Dict[int, List[int]]
    for pid, (ppid, _owner) in table.items():
        children[ppid].append(pid)
    found = set()
    todo = [root_pid]
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found.add(pid)
        todo.extend(children.get(pid, ()))
    if uid is not None:
        found.update(pid for pid, (_ppid, owner) in table.items() if owner == uid)
    found.discard(os.getpid())
    return sorted(p for p in found if p in table)


def usage(pids):
    # type: (List[int]) -> Usage
    rss = 0
    for pid in pids:
        try:
            with open("/proc/%d/statm" % pid, "rb") as f:
                rss += int(f.read().split()[1]) * PAGE_SIZE
        except (IOError, OSError, IndexError, ValueError):
            continue
    return Usage(rss // (1024 * 1024), len(pids))


def kill_build(root_pid, uid):
    # type: (int, Optional[int]) -> None
    """End every process of a build: its process group and tree, and with ``uid``, all of that user's."""
    try:
        os.killpg(root_pid, signal.SIGKILL)
    except OSError:
        pass
    for _round in range(50):
        if uid is not None:
            _kill_all_of(uid)
        pids = [p for p in members(root_pid, uid) if p != root_pid or not _reaped(p)]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.05)


def _reaped(pid):
    # type: (int) -> bool
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (IOError, OSError):
        return True


def _kill_all_of(uid):
    # type: (int) -> None
    """kill(-1) as ``uid``: the kernel ends every process of that user, forks racing or not."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only signals and exits
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            for _round in range(3):
                try:
                    os.kill(-1, signal.SIGKILL)
                except OSError:
                    pass
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _preexec(memory_mb, uid, max_procs):
    # type: (int, Optional[int], int) -> Callable[[], None]
    def preexec():
        # type: () -> None
        import resource

        os.setsid()  # its own process group, so a time-out kills everything it started
        if memory_mb > 0:
            limit = memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            if max_procs > 0:
                nproc = max_procs + NPROC_MARGIN
                resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))

    return preexec


class Finished(object):
    """How a sandboxed command ended."""

    def __init__(self, returncode, timed_out, limit):
        # type: (int, bool, Optional[str]) -> None
        self.returncode = returncode
        self.timed_out = timed_out
        self.limit = limit  # "memory" or "processes" when the watchdog ended it


def run(argv, env, cwd, log, timeout, memory_mb, max_procs, log_max_bytes, uid=None, on_start=None):
    # type: (List[str], Dict[str, str], str, Any, float, int, int, int, Optional[int], Any) -> Finished
    """Run ``argv`` with its output cut into ``log`` as it comes, within every limit, and end it all.

    ``uid`` (the "user" kind) is the user to become before ``argv`` starts; every process of
    that user is then part of the build.
    """
    capped = CappedLog(log, log_max_bytes)
    with open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(
            argv,
            stdin=devnull,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            preexec_fn=_preexec(memory_mb, uid, max_procs),
            close_fds=True,
        )
    if on_start is not None:
        on_start(proc.pid)
    fd = proc.stdout.fileno()  # type: ignore[union-attr]
    deadline = time.time() + timeout
    next_watch = 0.0
    timed_out = False
    limit = None  # type: Optional[str]
    exited_at = None  # type: Optional[float]
    try:
        while True:
            now = time.time()
            if now >= deadline:
                timed_out = True
                break
            try:
                ready = select.select([fd], [], [], WATCH_INTERVAL)[0]
            except (OSError, select.error) as exc:
                if exc.args[0] == errno.EINTR:
                    continue
                raise
            if ready:
                data = os.read(fd, 65536)
                if not data:
                    break  # every holder of the output is gone
                capped.write(data)
            if proc.poll() is not None:
                # Something the build left behind may hold the output open: it ends now.
                if exited_at is None:
                    exited_at = now
                    kill_build(proc.pid, uid)
                elif now - exited_at > KILL_GRACE:
                    break
            if now >= next_watch:
                next_watch = now + WATCH_INTERVAL
                used = usage(members(proc.pid, uid))
                if memory_mb > 0 and used.rss_mb > memory_mb:
                    limit = "memory"
                    capped.write(("\npiwheels-ctl: the build used %d MB of memory, more than its "
                                  "%d MB: ended\n" % (used.rss_mb, memory_mb)).encode())  # fmt: skip
                    break
                if max_procs > 0 and used.processes > max_procs:
                    limit = "processes"
                    capped.write(("\npiwheels-ctl: the build ran %d processes, more than its %d: "
                                  "ended\n" % (used.processes, max_procs)).encode())  # fmt: skip
                    break
    finally:
        kill_build(proc.pid, uid)
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
        capped.close()
    return Finished(proc.returncode, timed_out, limit)


def remove_tree(path):
    # type: (str) -> None
    """Remove a build's folder even where the build left folders without write permission."""

    def onerror(func, failed, _exc):
        # type: (Any, str, Any) -> None
        try:
            os.chmod(os.path.dirname(failed), stat.S_IRWXU)
            if os.path.isdir(failed) and not os.path.islink(failed):
                os.chmod(failed, stat.S_IRWXU)
            func(failed)
        except OSError:
            pass

    shutil.rmtree(path, onerror=onerror)
