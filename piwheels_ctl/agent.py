"""The build step: turn one sdist into wheels in a throwaway folder and report them as JSON.

This one file is both the local builder's build step and the agent the controller sends to
builders over SSH, so it must stay stdlib-only and run on Python 2.7 and 3.4+ as well as
today's Python: no f-strings, no annotations (type comments only), no pathlib.

    python agent.py probe
    python agent.py build --python PY --name NAME --version V --outbox DIR --log FILE ...
"""

from __future__ import absolute_import, division, print_function

import argparse
import contextlib
import errno
import hashlib
import json
import os
import platform
import shutil
import signal
import struct
import subprocess
import sys
import sysconfig
import tempfile
import time

try:
    from typing import Any, Dict, List, Optional  # noqa: F401 - used in type comments
except ImportError:  # pragma: no cover - Python 2.7/3.4 builders without typing
    pass

# Directories where distributions put compiler symlinks to ccache (Debian, Fedora, Arch).
CCACHE_MASQUERADE = ("/usr/lib/ccache", "/usr/lib64/ccache", "/usr/lib/ccache/bin")
# Variables passed through to pip so that proxies and private CAs keep working.
PASS_ENV = (
    "PATH",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "PIP_CERT",
)
KILL_GRACE = 5.0


def probe():
    # type: () -> Dict[str, Any]
    """The tags of the running interpreter, as bdist_wheel names the wheels it builds."""
    impl = platform.python_implementation()
    major, minor = sys.version_info[:2]
    python_tag = ("pp" if impl == "PyPy" else "cp") + str(major) + str(minor)
    soabi = sysconfig.get_config_var("SOABI")
    if soabi and soabi.startswith("cpython-"):
        abi_tag = "cp" + soabi.split("-")[1]
    elif soabi and soabi.startswith("pypy"):
        abi_tag = "_".join(soabi.split("-")[:2])
    else:  # CPython 2.7 has no SOABI: rebuild it from the build flags
        abi_tag = "cp" + str(major) + str(minor)
        if sysconfig.get_config_var("Py_DEBUG"):
            abi_tag += "d"
        if sysconfig.get_config_var("WITH_PYMALLOC") and major == 2:
            abi_tag += "m"
        if major == 2 and sys.maxunicode == 0x10FFFF:
            abi_tag += "u"
    plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    if plat == "linux_aarch64" and struct.calcsize("P") == 4:
        plat = "linux_armv7l"  # 32-bit userland on a 64-bit kernel (Raspberry Pi OS)
    elif plat == "linux_x86_64" and struct.calcsize("P") == 4:
        plat = "linux_i686"
    return {
        "python_tag": python_tag,
        "abi_tag": abi_tag,
        "platform_tag": plat,
        "implementation": impl,
        "version": "%d.%d.%d" % tuple(sys.version_info[:3]),
        "executable": sys.executable,
    }


def sha256_file(path):
    # type: (str) -> str
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _makedirs(path):
    # type: (str) -> None
    try:
        os.makedirs(path)
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            raise


def build_env(work, work_root, ccache_dir, index_url, find_links):
    # type: (str, str, Optional[str], Optional[str], List[str]) -> Dict[str, str]
    """The whole environment of a build: a throwaway HOME and TMPDIR, ccache set up to hit."""
    env = dict((k, os.environ[k]) for k in PASS_ENV if k in os.environ)
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(
        {
            "HOME": os.path.join(work, "home"),
            "TMPDIR": os.path.join(work, "tmp"),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            # The builder's own pip settings must not change what gets built or from where.
            "PIP_CONFIG_FILE": os.devnull,
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_NO_INPUT": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    if index_url:
        env["PIP_INDEX_URL"] = index_url
    else:
        env["PIP_NO_INDEX"] = "1"
    if find_links:
        env["PIP_FIND_LINKS"] = " ".join(find_links)
    if ccache_dir:
        masquerade = [d for d in CCACHE_MASQUERADE if os.path.isdir(d)]
        if masquerade:
            env["PATH"] = masquerade[0] + os.pathsep + env["PATH"]
        env["CCACHE_DIR"] = ccache_dir
        # pip builds in a randomly named folder and -g puts the folder into the object
        # files: without these two every rebuild misses the cache.
        env["CCACHE_NOHASHDIR"] = "1"
        env["CCACHE_BASEDIR"] = work_root
        # Depend mode never runs the preprocessor: a miss costs little more than no ccache.
        env["CCACHE_DEPEND"] = "1"
    return env


def _limit(memory_mb):
    # type: (int) -> Any
    def preexec():
        # type: () -> None
        os.setsid()  # its own process group, so a time-out kills everything it started
        if memory_mb > 0:
            import resource

            limit = memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return preexec


def _kill_group(pid):
    # type: (int) -> None
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass  # the group is gone already


def _wait(proc, timeout):
    # type: (subprocess.Popen[bytes], float) -> bool
    """Wait for ``proc`` at most ``timeout`` seconds; True if it had to be killed."""
    deadline = time.time() + timeout
    while proc.poll() is None:
        if time.time() >= deadline:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGTERM)
            grace = time.time() + KILL_GRACE
            while proc.poll() is None and time.time() < grace:
                time.sleep(0.05)
            _kill_group(proc.pid)
            proc.wait()
            return True
        time.sleep(0.02)
    return False


def cap_log(path, max_bytes):
    # type: (str, int) -> None
    """Keep the head and the tail of a log larger than ``max_bytes`` (the cause is at the end)."""
    size = os.path.getsize(path)
    if size <= max_bytes:
        return
    head_size = max_bytes // 4
    tail_size = max_bytes - head_size
    with open(path, "rb") as f:
        head = f.read(head_size)
        f.seek(size - tail_size)
        tail = f.read()
    marker = ("\n[... %d bytes cut by piwheels-ctl ...]\n" % (size - head_size - tail_size)).encode()
    with open(path, "wb") as f:
        f.write(head + marker + tail)


def build(
    python,  # type: str
    name,  # type: str
    version,  # type: str
    outbox,  # type: str
    log_path,  # type: str
    work_root,  # type: str
    timeout=3600.0,  # type: float
    memory_mb=0,  # type: int
    log_max_bytes=1 << 20,  # type: int
    index_url=None,  # type: Optional[str]
    find_links=(),  # type: Any
    ccache_dir=None,  # type: Optional[str]
    on_start=None,  # type: Any
    min_free_mb=0,  # type: int
):
    # type: (...) -> Dict[str, Any]
    """Build NAME==VERSION with ``python`` into ``outbox``; return the result the controller reads.

    ``on_start`` is called with the pid of the build's process group. A result with status
    "error" is the builder's fault (too little disk), not the project's: build it elsewhere.
    """
    _makedirs(work_root)
    _makedirs(outbox)
    free_mb = free_space_mb(work_root)
    if free_mb < min_free_mb:
        return builder_error("disk full: %d MB free in %s, %d MB needed" % (free_mb, work_root, min_free_mb))
    work = tempfile.mkdtemp(prefix="build-", dir=work_root)
    wheels = os.path.join(work, "wheels")
    for sub in ("home", "tmp", wheels):
        _makedirs(os.path.join(work, sub))
    env = build_env(work, work_root, ccache_dir, index_url, list(find_links))
    command = [
        python, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir",
        "--no-binary", name, "--wheel-dir", wheels, "%s==%s" % (name, version),
    ]  # fmt: skip
    started = time.time()
    try:
        with open(log_path, "wb") as log, open(os.devnull, "rb") as devnull:
            log.write(("$ %s\n" % " ".join(command)).encode())
            log.flush()
            proc = subprocess.Popen(
                command,
                stdin=devnull,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=work,
                env=env,
                preexec_fn=_limit(memory_mb),
                close_fds=True,
            )
            if on_start is not None:
                on_start(proc.pid)  # lets a controller kill the build's process group
            timed_out = _wait(proc, timeout)
            _kill_group(proc.pid)  # daemons a setup.py left behind
        duration = time.time() - started
        cap_log(log_path, log_max_bytes)
        files = []
        if proc.returncode == 0 and not timed_out:
            for filename in sorted(os.listdir(wheels)):
                if not filename.endswith(".whl"):
                    continue
                target = os.path.join(outbox, filename)
                shutil.move(os.path.join(wheels, filename), target)
                files.append(
                    {
                        "name": filename,
                        "size": os.path.getsize(target),
                        "sha256": sha256_file(target),
                    }
                )
        if not files and _disk_full(log_path):
            return builder_error("disk full: No space left on device during the build")
        return {
            "status": "success" if files else "failed",
            "returncode": proc.returncode,
            "timed_out": timed_out,
            "duration": duration,
            "files": files,
            "log": log_path,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def free_space_mb(path):
    # type: (str) -> int
    st = os.statvfs(path)
    return int(st.f_bavail * st.f_frsize // (1024 * 1024))


def builder_error(message):
    # type: (str) -> Dict[str, Any]
    return {"status": "error", "error": message, "files": [], "duration": 0.0, "timed_out": False}


def _disk_full(log_path):
    # type: (str) -> bool
    with open(log_path, "rb") as f:
        return b"No space left on device" in f.read()


def main(argv=None):
    # type: (Optional[List[str]]) -> int
    parser = argparse.ArgumentParser(prog="agent.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("probe", help="print this interpreter's wheel tags as JSON")
    b = sub.add_parser("build", help="build one sdist and print the result as JSON")
    b.add_argument("--python", required=True)
    b.add_argument("--name", required=True)
    b.add_argument("--version", required=True)
    b.add_argument("--outbox", required=True)
    b.add_argument("--log", required=True)
    b.add_argument("--work-root", required=True)
    b.add_argument("--timeout", type=float, default=3600.0)
    b.add_argument("--memory-mb", type=int, default=0)
    b.add_argument("--log-max-bytes", type=int, default=1 << 20)
    b.add_argument("--index-url")
    b.add_argument("--find-links", action="append", default=[])
    b.add_argument("--ccache-dir")
    b.add_argument("--min-free-mb", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "probe":
        result = probe()
    elif args.command == "build":
        result = build(
            args.python,
            args.name,
            args.version,
            args.outbox,
            args.log,
            args.work_root,
            timeout=args.timeout,
            memory_mb=args.memory_mb,
            log_max_bytes=args.log_max_bytes,
            index_url=args.index_url,
            find_links=args.find_links,
            ccache_dir=args.ccache_dir,
            min_free_mb=args.min_free_mb,
        )
    else:
        parser.print_usage(sys.stderr)
        return 2
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # the controller reads one JSON line whatever happens
        sys.stdout.write(json.dumps(builder_error("agent: %r" % (exc,))) + "\n")
        sys.exit(1)
