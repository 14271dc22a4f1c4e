"""A build's compilers through ccache, set up so that a rebuild hits, and its hits counted.

Every compiler a build starts goes through ccache: plain ``cc`` calls (setuptools) and Meson's
compilers find the wrappers first on PATH, CMake gets them as its compiler launcher. The
frontends build in randomly named folders: pip unpacks the sdist and makes the isolated build
environment in new temporary folders, uv in new folders of its cache. ``CCACHE_BASEDIR`` above
them all turns the compiler's absolute paths into paths relative to where it runs, which hides
the random names of the build's own folders. The build environment's random name would still
show in ``-I`` options pointing into it (C++ headers of cppy, pybind11, numpy, and uv's
``-I<venv>/include``): the wrappers give it a stable name, a link made on first use in the
project's own folder, and pass that name to the compiler instead.

Shipped to builders with the rest of this folder: stdlib-only, Python 2.7 and 3.4+, type
comments only.
"""

from __future__ import absolute_import, division, print_function

import os
import resource
import shutil
import stat
import subprocess
import threading

if __package__:  # the local builder: imported as part of piwheels_ctl
    from . import sandbox, supervise
else:  # on a builder: the files sent beside this one
    import sandbox  # type: ignore[import-not-found, no-redef]
    import supervise  # type: ignore[import-not-found, no-redef]

try:
    from typing import Dict, List, Optional, Tuple  # noqa: F401 - used in type comments
except ImportError:  # pragma: no cover - Python 2.7/3.4 builders without typing
    pass

# Directories where distributions put compiler symlinks to ccache (Debian, Fedora, Arch).
CCACHE_MASQUERADE = ("/usr/lib/ccache", "/usr/lib64/ccache", "/usr/lib/ccache/bin")
# The compilers wrapped where the distribution has no such folder.
COMPILERS = ("cc", "c++", "gcc", "g++")
LAUNCHER = "ccache-launcher"  # the wrapper CMake starts with the compiler as its first argument
# ccache reading a project's statistics: its time (seconds) and memory (MB) at most.
STATS_TIMEOUT, STATS_MEMORY_MB = 60, 1024
HERE = os.path.dirname(os.path.abspath(__file__))
STABLE_NAME = "piwheels-env"  # the link to the build environment, in the folder above it

# POSIX sh, run for every compile. Each line "MARKER|BASE" of $PIWHEELS_STABLE_ENVS says where
# a build environment's random name starts in an argument; the name is replaced by the link
# BASE/piwheels-env, made (atomically, by a rename: the build's compilers run in parallel)
# to point to the environment of this build. The script is the same from one build to the
# next (nothing of the build's random folders is in it), so its modification time stays too:
# where ccache runs it as the compiler, ccache knows it by its size and time. The real
# compilers' identity is in it instead (``identity``): a new compiler rewrites it, and the cache
# misses as it should. It is also the ``ccache`` a build finds on PATH, the one Meson puts before
# the compiler: the real ccache would hash the build environment's random folder (``-I`` of
# pybind11, numpy) before a compiler wrapper renamed it, so this renames it first, as the
# launcher does, and runs the real ccache by its full path.
WRAPPER = r"""#!/bin/sh
# Made by the piwheels agent: stable paths for the build environment, then ccache.
# The compilers behind it: %(identity)s
# Out of PATH wherever it is (the frontends put their environment's bin folder before it), so
# that ccache finds the real compiler, not this again.
set -f
case ":$PATH:" in
    *":%(wrappers)s:"*) PATH=":$PATH:"; PATH=${PATH%%%%":%(wrappers)s:"*}:${PATH#*":%(wrappers)s:"}
        PATH=${PATH#:}; PATH=${PATH%%:}; export PATH ;;
esac
case ${0##*/} in
    %(launcher)s|ccache)  # a compiler (or an option of ccache's own) as the first argument
        case $1 in  # CMake found a wrapper as its compiler: ccache runs the compiler of that name
            "%(wrappers)s"/*) compiler=${1##*/}; shift; set -- "$compiler" "$@" ;;
        esac ;;
    *) set -- "${0##*/}" "$@" ;;
esac
stable() {
    rest=${arg#*"$1"}
    random=${rest%%%%/*}
    link=$2/%(stable)s
    if [ "$(readlink "$link")" != "$1$random" ]; then
        ln -s "$1$random" "$link.$$" && mv -f -T "$link.$$" "$link"
    fi
    arg=${arg%%%%"$1"*}$link${rest#"$random"}
}
nl='
'
for arg do
    shift
    IFS=$nl
    for pair in $PIWHEELS_STABLE_ENVS; do
        case $arg in
            *"${pair%%%%|*}"*) stable "${pair%%%%|*}" "${pair#*|}" ;;
        esac
    done
    unset IFS
    set -- "$@" "$arg"
done
exec %(ccache)s "$@"
"""


def ccache_env(ccache_dir, project_cache, base_dir, path, envs):
    # type: (str, str, str, str, List[Tuple[str, str]]) -> Dict[str, str]
    """The variables that send every compiler of a build through ccache, set up to hit.

    The one place ccache is configured for a build. ``envs`` are the (marker, base) pairs of
    the frontend's build environments (see ``WRAPPER``); ``path`` is the build's PATH.
    """
    ccache = sandbox.which("ccache")
    if not os.path.isabs(ccache):
        return {}  # no ccache on this builder: builds run without it
    # In the project's cache folder, not the build's: a wrapper whose path and modification time
    # stay the same is the same compiler to a ccache that Meson or CMake put in front of it.
    wrappers = os.path.join(project_cache, "piwheels-bin")
    launcher = _write_wrappers(ccache, wrappers, path)
    env = {
        "PATH": wrappers + os.pathsep + path,
        "PIWHEELS_STABLE_ENVS": "\n".join("%s|%s" % (_sh(m), _sh(b)) for m, b in envs),
        "CCACHE_DIR": project_cache,
        "CMAKE_C_COMPILER_LAUNCHER": launcher,
        "CMAKE_CXX_COMPILER_LAUNCHER": launcher,
        # -g puts the folder a compiler runs in into the object files: without NOHASHDIR every
        # rebuild in a new folder misses the cache. The base folder holds the build's folder
        # and the project's frontend cache (uv unpacks sdists there).
        "CCACHE_NOHASHDIR": "1",
        "CCACHE_BASEDIR": base_dir,
        # Depend mode never runs the preprocessor: a miss costs little more than no ccache.
        "CCACHE_DEPEND": "1",
        # scikit-build-core builds in a random temporary folder unless told: one beside the
        # sources keeps the paths of CMake's compiler calls the same from one build to the next.
        "SKBUILD_BUILD_DIR": "build/piwheels-cmake",
    }
    conf = os.path.join(ccache_dir, "ccache.conf")
    if os.path.exists(conf):
        env["CCACHE_CONFIGPATH"] = conf  # the size limit the controller set, read-only
    return env


def cython_env(box, project_cache):
    # type: (str, str) -> Dict[str, str]
    """The variables that give a build's ``cythonize()`` calls Cython's cache in the project's
    folder: ``cythonhook.py`` copied into the build's own folder as the backend's sitecustomize."""
    site = os.path.join(box, "site")
    os.mkdir(site)  # the build's folder is new
    shutil.copyfile(os.path.join(HERE, "cythonhook.py"), os.path.join(site, "sitecustomize.py"))
    return {"PYTHONPATH": site, "PIWHEELS_CYTHON_CACHE": os.path.join(project_cache, "cython")}


def _write_wrappers(ccache, folder, path):
    # type: (str, str, str) -> str
    """Write the wrappers into ``folder`` (unless they are there as the last build left them):
    one per compiler name the distribution's ccache folder has (else ``COMPILERS``), the
    launcher and ``ccache`` (see ``WRAPPER``); the launcher's path."""
    masquerade = [d for d in CCACHE_MASQUERADE if os.path.isdir(d)]
    compilers = sorted(os.listdir(masquerade[0])) if masquerade else list(COMPILERS)
    script = WRAPPER % {"wrappers": _sh(folder), "launcher": LAUNCHER, "stable": STABLE_NAME,
                        "identity": identity(compilers, path), "ccache": _sh(ccache)}  # fmt: skip
    names = sorted(set(compilers) | {"ccache"})
    first = os.path.join(folder, LAUNCHER)
    try:
        # The project's builds can write here: read a regular file's first bytes, nothing else,
        # and every other name must be a link to that same file.
        st = os.lstat(first)
        if stat.S_ISREG(st.st_mode):
            with open(first) as f:
                same = f.read(len(script) + 1) == script
            if same and sorted(os.listdir(folder)) == sorted(set(names) | {LAUNCHER}):
                links = [os.lstat(os.path.join(folder, name)) for name in names if name != LAUNCHER]
                if all((other.st_ino, other.st_dev) == (st.st_ino, st.st_dev) for other in links):
                    return first  # as the last build left them: their times too
    except (IOError, OSError):
        pass
    supervise.remove_tree(folder)
    os.makedirs(folder)
    with open(first, "w") as f:
        f.write(script)
    os.chmod(first, 0o755)  # noqa: S103 - run by the build's uid
    for name in names:
        if "/" not in name and name != LAUNCHER:
            os.link(first, os.path.join(folder, name))
    return first


def identity(names, path):
    # type: (List[str], str) -> str
    """The real compilers of ``names`` on ``path``: each one's file, size and modification time."""
    found = []
    folders = [f for f in path.split(os.pathsep) if f and f not in CCACHE_MASQUERADE]
    for name in names:
        for folder in folders:
            real = os.path.realpath(os.path.join(folder, name))
            if os.path.basename(real) != "ccache" and os.path.isfile(real) and os.access(real, os.X_OK):
                st = os.stat(real)
                found.append("%s=%s:%d:%d" % (name, real, st.st_size, int(st.st_mtime)))
                break
    return " ".join(found).replace("\n", " ")


def _sh(text):
    # type: (str) -> str
    """``text`` inside double quotes of a shell script (paths the agent chose: no quotes in them)."""
    for char in '"$`\\':
        if char in text:
            raise ValueError("%r: not usable in a shell script" % (text,))
    return text


def ccache_counts(project_cache, ccache_dir):
    # type: (Optional[str], Optional[str]) -> Optional[Dict[str, int]]
    """The hits and misses counted so far in a project's compiler cache; None without ccache."""
    if not project_cache or not ccache_dir:
        return None
    env = dict(os.environ, CCACHE_DIR=project_cache)
    conf = os.path.join(ccache_dir, "ccache.conf")
    if os.path.exists(conf):
        env["CCACHE_CONFIGPATH"] = conf
    # The project's builds can write into its cache (a FIFO for a stats file, a link to
    # /dev/zero): ccache reads it within a time and a memory limit, else there are no counts.
    out = _bounded_output(["ccache", "--print-stats"], env, STATS_TIMEOUT, STATS_MEMORY_MB)
    if out is None:
        return None  # failed, stopped, or a ccache older than 4.0 (no machine-readable statistics)
    stats = {}  # type: Dict[str, int]
    for line in out.splitlines():
        key, _, value = line.partition("\t")
        if value.strip().isdigit():
            stats[key] = int(value)
    hits = stats.get("direct_cache_hit", 0) + stats.get("preprocessed_cache_hit", 0)
    return {"hits": hits, "misses": stats.get("cache_miss", 0)}


def _bounded_output(argv, env, timeout, memory_mb):
    # type: (List[str], Dict[str, str], float, int) -> Optional[str]
    """The output of ``argv`` if it succeeds within ``timeout`` seconds and ``memory_mb`` of
    address space, else None (it is killed at the time limit)."""

    def limit_memory():
        # type: () -> None
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))

    try:
        with open(os.devnull, "rb") as devnull, open(os.devnull, "wb") as sink:
            proc = subprocess.Popen(argv, stdin=devnull, stdout=subprocess.PIPE, stderr=sink, env=env,
                                    preexec_fn=limit_memory, close_fds=True)  # fmt: skip
            timer = threading.Timer(timeout, proc.kill)
            timer.start()
            try:
                out = proc.communicate()[0]
            finally:
                timer.cancel()
    except OSError:
        return None
    return out.decode("ascii", "replace") if proc.returncode == 0 else None


def counts_delta(before, after):
    # type: (Optional[Dict[str, int]], Optional[Dict[str, int]]) -> Optional[Dict[str, int]]
    """The hits and misses of one build: the project's counts after it less those before."""
    if before is None or after is None:
        return None
    return {"hits": after["hits"] - before["hits"], "misses": after["misses"] - before["misses"]}
