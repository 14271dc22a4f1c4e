"""Run a build's command within its limits, cut its log as it is written, and end it all.

Limits hold for the whole build, not per process: a watchdog sums the memory and counts the
processes of the build's process tree (``RLIMIT_NPROC`` is the backstop), the log keeps its
head and tail within its budget while it is written, and when the build ends or its time runs
out every process of it is killed, daemons included.

Shipped to builders with the rest of this folder: stdlib-only, Python 2.7 and 3.4+, type
comments only.
"""

from __future__ import absolute_import, division, print_function

import collections
import errno
import os
import select
import shutil
import signal
import stat
import subprocess
import time

try:
    from typing import Any, Callable, Dict, List, Optional, Tuple  # noqa: F401 - type comments
except ImportError:  # pragma: no cover - Python 2.7/3.4 builders without typing
    pass

WATCH_INTERVAL = 0.25
KILL_GRACE = 5.0
# RLIMIT_NPROC is set this far above the build's process limit, so that the watchdog, which
# sees the count pass the limit, ends the build and names the cause: the rlimit is the backstop.
NPROC_MARGIN = 16
HEAD_BYTES_SHARE = 4  # a cut log keeps 1/4 of its budget from the start, 3/4 from the end


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
            kill_all_of(uid)
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


def kill_all_of(uid):
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


PER_LINUX32 = 0x0008


def set_linux32():
    # type: () -> None
    """The 32-bit personality (``setarch linux32``): ``uname -m`` says the userland's machine."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.personality(PER_LINUX32) == -1:
        raise OSError(ctypes.get_errno(), "personality(PER_LINUX32) failed")


def _preexec(memory_mb, uid, max_procs, personality=False):
    # type: (int, Optional[int], int, bool) -> Callable[[], None]
    def preexec():
        # type: () -> None
        import resource

        os.setsid()  # its own process group, so a time-out kills everything it started
        if personality:
            set_linux32()
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


def run(argv, env, cwd, log, timeout, memory_mb, max_procs, log_max_bytes, uid=None, on_start=None,
        personality=False):  # fmt: skip
    # type: (List[str], Dict[str, str], str, Any, float, int, int, int, Optional[int], Any, bool) -> Finished
    """Run ``argv`` with its output cut into ``log`` as it comes, within every limit, and end it all.

    ``uid`` (the "user" kind) is the user to become before ``argv`` starts; every process of
    that user is then part of the build. ``personality`` runs it under the 32-bit personality.
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
            preexec_fn=_preexec(memory_mb, uid, max_procs, personality),
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
