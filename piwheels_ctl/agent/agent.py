"""The build step: turn one sdist into wheels in a throwaway folder and report them as JSON.

This one file is both the local builder's build step and the agent the controller sends to
builders over SSH, so it must stay stdlib-only and run on Python 2.7 and 3.4+ as well as
today's Python: no f-strings, no annotations (type comments only), no pathlib.

    python agent.py probe
    python agent.py build --python PY --name NAME --version V --outbox DIR --log FILE ...
"""

from __future__ import absolute_import, division, print_function

import argparse
import collections
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import time
import zipfile

if __package__:  # the local builder: imported as part of piwheels_ctl
    from . import (
        buildnet,
        buildplatform,
        compilers,
        depscache,
        elfdeps,
        remotecache,
        requirespython,
        sandbox,
        sdistfetch,  # fmt: skip
        supervise,
    )
else:  # on a builder: the files sent beside this one
    import buildnet  # type: ignore[import-not-found, no-redef]
    import buildplatform  # type: ignore[import-not-found, no-redef]
    import compilers  # type: ignore[import-not-found, no-redef]
    import depscache  # type: ignore[import-not-found, no-redef]
    import elfdeps  # type: ignore[import-not-found, no-redef]
    import remotecache  # type: ignore[import-not-found, no-redef]
    import requirespython  # type: ignore[import-not-found, no-redef]
    import sandbox  # type: ignore[import-not-found, no-redef]
    import sdistfetch  # type: ignore[import-not-found, no-redef]
    import supervise  # type: ignore[import-not-found, no-redef]

try:
    from typing import Any, Dict, Iterator, List, Optional  # noqa: F401 - used in type comments
except ImportError:  # pragma: no cover - Python 2.7/3.4 builders without typing
    pass

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
# Project names and versions as the controller sends them (canonical names, PEP 440 versions):
# nothing a shell or a path could misread, checked again here.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+!-]*$")
# The names of wheels the agent collects; the controller checks them again as wheel names.
WHEEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+!-]*\.whl$")
# The files the controller sends to a builder: this one and the modules it imports.
MODULES = (
    "agent.py", "buildplatform.py", "requirespython.py", "sandbox.py", "supervise.py", "buildnet.py",
    "sdistfetch.py", "elfdeps.py", "depscache.py", "compilers.py", "remotecache.py", "cythonhook.py",
)  # fmt: skip
HERE = os.path.dirname(os.path.abspath(__file__))


def probe():
    # type: () -> Dict[str, Any]
    """What the controller asks of a builder's interpreter: its tags and platform, and the
    digests of the agent's files here (so the controller knows when to send them again)."""
    result = buildplatform.describe()
    result["modules"] = dict((name, sha256_file(os.path.join(HERE, name))) for name in MODULES)
    return result


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


def build_env(box, base_dir, ccache_dir, project_cache, index_url, find_links, deps=None, remote=False):
    # type: (str, str, Optional[str], Optional[str], Optional[str], List[str], Optional[str], bool) -> Dict[str, str]
    """The whole environment of a build: a throwaway HOME and TMPDIR, ccache set up to hit
    (``remote``: also in the farm's shared cache, through the build's proxy)."""
    env = dict((k, os.environ[k]) for k in PASS_ENV if k in os.environ)
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(
        {
            "HOME": os.path.join(box, "home"),
            "TMPDIR": os.path.join(box, "tmp"),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            # The builder's own pip settings must not change what gets built or from where.
            "PIP_CONFIG_FILE": os.devnull,
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_NO_INPUT": "1",
        }
    )
    # Bytecode is written (as a user's pip build writes it): the build environment's packages
    # come without it, and the backend's Python starts twice in it (uv: the requirements, then
    # the wheel; pip three times), so the second start reads what the first compiled
    # (setuptools imports in half the time). Only the build's own folders are writable.
    if index_url:
        env["PIP_INDEX_URL"] = index_url
    else:
        env["PIP_NO_INDEX"] = "1"
    if find_links:
        env["PIP_FIND_LINKS"] = " ".join(find_links)
    if ccache_dir and project_cache:
        # Where the frontends' build environments get their random names: pip's in TMPDIR,
        # uv's in the builds folder of its cache.
        envs = [(os.path.join(env["TMPDIR"], "pip-build-env-"), env["TMPDIR"])]
        if deps:
            envs.append((os.path.join(deps, "builds-v0", ".tmp"), deps))
        env.update(compilers.ccache_env(ccache_dir, project_cache, base_dir, env["PATH"], envs))
        if remote:  # the relay in the sandbox: the agent's proxy forwards to the project's folder
            env.update(remotecache.storage_env(buildnet.PROXY_PORT))
    return env


# What one build was asked for (the arguments of ``build``).
Request = collections.namedtuple(
    "Request",
    "python name version outbox log_path work_root timeout memory_mb log_max_bytes index_url find_links "
    "ccache_dir on_start min_free_mb max_procs frontend user personality deps_cache deps_cache_mb "
    "ccache_remote",
)


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


def _chown_tree(folder, uid):
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


def unpack_frontend(wheel):
    # type: (str) -> str
    """The folder the pinned frontend's wheel (pip's or uv's) unpacks into beside it (made once,
    atomically)."""
    if not wheel.endswith(".whl") or not os.path.isfile(wheel):
        raise sdistfetch.DownloadError("frontend %r: not a wheel on this builder" % wheel, False)
    folder = wheel[: -len(".whl")]
    if not os.path.isdir(folder):
        partial = tempfile.mkdtemp(prefix=".unpack-", dir=os.path.dirname(wheel))
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(partial)
        uv = _uv_binary(partial)
        if uv is not None:  # zip files keep no modes: uv's binary is made runnable here
            os.chmod(uv, 0o755)  # noqa: S103 - run by every build's uid
        os.chmod(partial, 0o755)  # noqa: S103 - read by every build's uid
        try:
            os.rename(partial, folder)
        except OSError:  # another build unpacked it meanwhile
            shutil.rmtree(partial, ignore_errors=True)
    return folder


def _uv_binary(folder):
    # type: (str) -> Optional[str]
    """The uv binary in an unpacked uv wheel (``uv-V.data/scripts/uv``), None in pip's."""
    if not os.path.basename(folder).startswith(("uv-", ".unpack-")):
        return None
    for entry in os.listdir(folder):
        candidate = os.path.join(folder, entry, "scripts", "uv")
        if entry.endswith(".data") and os.path.isfile(candidate):
            return candidate
    return None


def _allowed_hosts(urls):
    # type: (List[str]) -> List[str]
    """ "host:port" of every URL a build's pip is told to use: the proxy lets these through."""
    hosts = []
    for url in urls:
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in ("http", "https"):
            continue
        hostport = rest.split("/", 1)[0].rsplit("@", 1)[-1]
        if ":" not in hostport.rsplit("]", 1)[-1]:
            hostport += ":443" if scheme == "https" else ":80"
        hosts.append(hostport.replace("[", "").replace("]", "") if hostport.count(":") > 1 else hostport)
    return hosts


def _sweep(work_root):
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


def _collect(wheels, outbox):
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
    sandbox_kind="auto",  # type: str
    max_procs=1024,  # type: int
    sdist_url=None,  # type: Optional[str]
    sdist_sha256=None,  # type: Optional[str]
    frontend=None,  # type: Optional[str]
    deps_cache=None,  # type: Optional[str]
    deps_cache_mb=0,  # type: int
    ccache_remote=None,  # type: Optional[str]
):
    # type: (...) -> Dict[str, Any]
    """Build NAME==VERSION with ``python`` in a sandbox into ``outbox``; return the controller's result.

    ``on_start`` is called with the pid of the build's process group. A result with status
    "error" is the builder's fault (no sandbox, too little disk), not the project's: build it
    elsewhere. ``ccache_remote`` is the URL of the farm's shared compiler cache, if any.
    """
    if not SAFE_NAME.match(name) or not SAFE_NAME.match(version):
        return builder_error("refused: %r %r is not a project name and version" % (name, version))
    user = invoking_user()
    if user is not None:  # root through sudo: root's own folders only, for the build's uid
        parent = os.path.dirname(deps_cache or "/")
        if deps_cache and not os.path.exists(deps_cache) and not_root_owned(parent) is None:
            _makedirs(deps_cache)  # new in root's own folder (builder roles before the cache)
        for folder in [work_root] + [f for f in (ccache_dir, deps_cache) if f]:
            problem = not_root_owned(folder)
            if problem:
                return builder_error("refused as root through sudo: %s (the builder role makes it)"
                                     % problem)  # fmt: skip
    _makedirs(work_root)
    with as_user(user):
        _makedirs(outbox)
    free_mb = free_space_mb(work_root)
    if free_mb < min_free_mb:
        return builder_error("disk full: %d MB free in %s, %d MB needed" % (free_mb, work_root, min_free_mb))
    try:
        kind = sandbox.choose(sandbox_kind)[0]
        uid, uid_lock = sandbox.lease_uid() if os.geteuid() == 0 else (None, None)
    except sandbox.SandboxError as exc:
        return builder_error("sandbox: %s" % (exc,))
    try:
        _sweep(work_root)
        new = tempfile.mkdtemp(prefix=".new-", dir=work_root)
        # Held while the build runs: a later agent removes the folders whose lock nobody holds.
        with open(os.path.join(new, ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            work = os.path.join(work_root, "build-" + os.path.basename(new)[len(".new-") :])
            os.rename(new, work)
            try:
                sdist = None
                if sdist_url:
                    sdist = sdistfetch.fetch_sdist(sdist_url, sdist_sha256, work, lambda: as_user(user))
                with as_user(user):
                    pip = frontend and unpack_frontend(frontend)
                job = Request(python, name, version, outbox, log_path, work_root, timeout, memory_mb,
                              log_max_bytes, index_url, list(find_links), ccache_dir, on_start,
                              min_free_mb, max_procs, pip, user, buildplatform.build_personality(),
                              deps_cache, deps_cache_mb, ccache_remote)  # fmt: skip
                return _build(job, work, kind, uid, sdist)
            except sdistfetch.DownloadError as exc:
                if exc.mismatch:  # the index's file is not what it says: the project's record
                    return dict(builder_error(str(exc)), status="failed", download_error=str(exc))
                return builder_error("download: %s" % (exc,))
            finally:
                supervise.remove_tree(work)
    finally:
        if uid_lock is not None:
            uid_lock.close()


def _build(job, work, kind, uid, sdist):
    # type: (Any, str, str, Optional[int], Optional[str]) -> Dict[str, Any]
    """The build of ``job`` (a ``Request``) in ``work`` with a sandbox of ``kind``."""
    box = os.path.join(work, "build")  # the only folder the build may write to
    wheels = os.path.join(box, "wheels")
    for sub in (box, os.path.join(box, "home"), os.path.join(box, "tmp"), wheels):
        _makedirs(sub)
    os.chmod(work, 0o711)  # noqa: S103 - the build's uid passes through to its folder, sees nothing else
    compilers = _project_cache(job.ccache_dir, job.name)
    with compilers as project_cache, _project_cache(job.deps_cache, job.name) as deps:
        # The shared cache only behind the proxy (a sandbox with its own network): a build
        # without one could reach the cache, or learn its URL, by itself.
        remote = None
        if project_cache and job.ccache_remote and kind == "bwrap":
            remote = remotecache.Forwarder(job.ccache_remote, job.name)
        result = _build_in(job, work, kind, uid, sdist, box, wheels, project_cache, deps, remote)
    if job.deps_cache and job.deps_cache_mb:
        depscache.prune(job.deps_cache, job.deps_cache_mb)
    return result


@contextlib.contextmanager
def _project_cache(root, name):
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
    _makedirs(folder)
    with open(folder + ".lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (IOError, OSError):
            yield None  # another build of this project has it now
            return
        os.utime(folder + ".lock", None)  # last used: pruning drops the longest unused first
        yield folder


def frontend_command(job, wheels, wanted, deps, env, site):
    # type: (Any, str, List[str], Optional[str], Dict[str, str], Dict[str, str]) -> List[str]
    """The command that builds ``wanted`` into ``wheels`` with the job's frontend, ``env`` set
    for it: uv where the controller sent uv, else the pinned pip (or the interpreter's own).
    ``site``: what the build backend's Python should start with (uv passes it on, pip not)."""
    uv = _uv_binary(job.frontend) if job.frontend else None
    if uv is not None:
        env.update(site)
        command = [uv, "build", "--wheel", "--no-config", "--no-python-downloads", "--python", job.python,
                   "--out-dir", wheels, "--system-certs"]  # fmt: skip
        command += ["--cache-dir", deps] if deps else ["--no-cache"]
        command += ["--default-index", job.index_url] if job.index_url else ["--no-index"]
        for link in job.find_links:
            command += ["--find-links", link]
        return command + wanted
    command = [job.python, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", wheels]
    command += ["--cache-dir", deps] if deps else ["--no-cache-dir"]
    if job.frontend:  # the pinned pip (frontend.py), whatever the builder has, isolated PEP 517 builds
        env["PYTHONPATH"] = job.frontend
        command.append("--use-pep517")
    return command + wanted


def _build_in(job, work, kind, uid, sdist, box, wheels, project_cache, deps, remote):
    # type: (Any, str, str, Optional[int], Optional[str], str, str, Optional[str], Optional[str], Any) -> Dict[str, Any]
    if uid is not None:  # the agent is root: the build's uid owns the build's folders
        for folder in (box, project_cache, deps):
            if folder:
                _chown_tree(folder, uid)
    base_dir = _common_folder([job.work_root] + ([job.deps_cache] if deps else []))
    env = build_env(box, base_dir, job.ccache_dir, project_cache, job.index_url, job.find_links, deps,
                    remote is not None)  # fmt: skip
    if sdist is not None:  # checked by the agent: readable by the build in its own folder
        target = os.path.join(box, os.path.basename(sdist))
        shutil.move(sdist, target)
        if uid is not None:
            os.lchown(target, uid, uid)
        wanted = [target]
    else:
        wanted = ["--no-binary", job.name, "%s==%s" % (job.name, job.version)]
    site = compilers.cython_env(box, project_cache) if project_cache else {}
    command = frontend_command(job, wheels, wanted, deps, env, site)
    if job.personality:  # setup.py and bdist_wheel name the userland's platform, not the kernel's
        env["_PYTHON_HOST_PLATFORM"] = job.personality
    proxy = None
    if kind == "bwrap":
        proxy = buildnet.Proxy(
            os.path.join(work, "proxy.sock"), _allowed_hosts([job.index_url or ""] + job.find_links), remote
        )
        env.update(buildnet.proxy_env())
        read_only = sandbox.interpreter_dirs(job.python) + ([job.frontend] if job.frontend else [])
        read_only += [link for link in job.find_links if link.startswith("/")]
        if job.ccache_dir:
            read_only.append(os.path.join(job.ccache_dir, "ccache.conf"))
        argv = sandbox.bwrap_command(
            buildnet.relay_command(job.python, command, job.max_procs + supervise.NPROC_MARGIN),
            box,
            [box] + [f for f in (project_cache, deps) if f],
            read_only,
            [(proxy.path, buildnet.PROXY_SOCKET)],
            uid,
        )
    else:
        argv = command
    started = time.time()
    counts = compilers.ccache_counts(project_cache, job.ccache_dir)
    try:
        with as_user(job.user):
            log = open(job.log_path, "wb")  # noqa: SIM115 - opened as the user, closed below
        with log:
            log.write(("$ %s\n" % " ".join(command)).encode())
            finished = supervise.run(
                argv, env, box, log, job.timeout, job.memory_mb, job.max_procs, job.log_max_bytes,
                uid=uid if kind == "user" else None, on_start=job.on_start,
                personality=job.personality is not None,
            )  # fmt: skip
            ccache = compilers.counts_delta(counts, compilers.ccache_counts(project_cache, job.ccache_dir))
            if ccache is not None and ccache["hits"] + ccache["misses"]:
                log.write(("\n[piwheels] ccache: %d hits, %d misses (%d%%)\n" % (
                    ccache["hits"], ccache["misses"],
                    100 * ccache["hits"] // (ccache["hits"] + ccache["misses"]))).encode())  # fmt: skip
            if remote is not None:
                log.write(remotecache.summary(remote.counts).encode() + b"\n")
    except OSError as exc:  # the sandbox or the interpreter could not be started
        return builder_error("cannot start the build: %s" % (exc,))
    finally:
        if proxy is not None:
            proxy.close()
    duration = time.time() - started
    files = []  # type: List[Dict[str, Any]]
    if finished.returncode == 0 and not finished.timed_out and finished.limit is None:
        with as_user(job.user):
            files = _collect(wheels, job.outbox)  # read nothing the build left before this
        built = [os.path.join(job.outbox, f["name"]) for f in files]
        refusal = requirespython.refusal(job.python, built) if command[0] != job.python else None
        with as_user(job.user):
            if refusal is not None:  # uv builds what pip refuses: the same outcome either way
                for path in built:
                    os.remove(path)
                files = []
                with open(job.log_path, "ab") as log:
                    log.write(("ERROR: %s\n" % refusal).encode())
            else:
                _add_deps(files, job.outbox)
    armv6 = any(f["name"].endswith("-linux_armv7l.whl") for f in files) and buildplatform.armv6_userland()
    result = {
        "status": "success" if files else "failed",
        "returncode": finished.returncode,
        "timed_out": finished.timed_out,
        "limit": finished.limit,
        "network": proxy.attempts if proxy is not None else [],
        "sandbox": kind,
        "duration": duration,
        "files": files,
        "log": job.log_path,
        # An ARMv6 userland's armv7l wheels run on ARMv6 too: the controller also publishes them
        # as linux_armv6l (Pi Zero, Pi 1). A Debian armhf (ARMv7) userland's may not.
        "armv6_userland": armv6,
        "ccache": ccache,
        # Requests to the shared compiler cache: get/found, put/stored, refused.
        "ccache_remote": remote.counts if remote is not None else None,
    }  # type: Dict[str, Any]
    if free_space_mb(job.work_root) < max(job.min_free_mb, 1):
        # A build can fill the disk through its project's caches, which outlive it: they go
        # first (this build holds them), so that the builder stays in service for the others.
        for folder in (project_cache, deps):
            if folder:
                supervise.remove_tree(folder)
    if not files:
        # The agent's own check, never the log's text: is the disk full without this build?
        supervise.remove_tree(box)
        free_mb = free_space_mb(job.work_root)
        if free_mb < max(job.min_free_mb, 1):
            return builder_error("disk full: %d MB free in %s after the build" % (free_mb, job.work_root))
    return result


def _add_deps(files, outbox):
    # type: (List[Dict[str, Any]], str) -> None
    """Each file's runtime libraries and their Debian packages here: a help, never a failure."""
    try:
        deps = elfdeps.wheel_deps([os.path.join(outbox, f["name"]) for f in files])
    except Exception:  # noqa: BLE001 - whatever the wheel holds, the build's result stands
        return
    for entry in files:
        entry["deps"] = deps.get(os.path.join(outbox, entry["name"]), [])


def _common_folder(folders):
    # type: (List[str]) -> str
    """The deepest folder that holds every one of ``folders``."""
    parts = [os.path.abspath(f).split(os.sep) for f in folders]
    common = []  # type: List[str]
    for names in zip(*parts):  # noqa: B905 - Python 2.7's zip() takes no strict=
        if len(set(names)) != 1:
            break
        common.append(names[0])
    return os.sep.join(common) or os.sep


def free_space_mb(path):
    # type: (str) -> int
    st = os.statvfs(path)
    return int(st.f_bavail * st.f_frsize // (1024 * 1024))


def builder_error(message):
    # type: (str) -> Dict[str, Any]
    return {"status": "error", "error": message, "files": [], "duration": 0.0, "timed_out": False}


def main(argv=None):
    # type: (Optional[List[str]]) -> int
    parser = argparse.ArgumentParser(prog="agent.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("probe", help="print this interpreter's wheel tags and the sandbox as JSON")
    p.add_argument("--sandbox", choices=("auto",) + sandbox.KINDS, default="auto")
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
    b.add_argument("--sandbox", choices=("auto",) + sandbox.KINDS, default="auto")
    b.add_argument("--max-procs", type=int, default=1024)
    b.add_argument("--sdist-url")
    b.add_argument("--sdist-sha256")
    b.add_argument("--frontend", help="the pinned pip's or uv's wheel on this builder")
    b.add_argument("--deps-cache", help="the folder of each project's build requirements' cache")
    b.add_argument("--deps-cache-mb", type=int, default=0, help="prune the caches to this size")
    b.add_argument("--ccache-remote", help="the URL of the farm's shared compiler cache")
    args = parser.parse_args(argv)
    if args.command == "probe":
        result = probe()
        try:
            result["sandbox"] = sandbox.choose(args.sandbox)[1]
        except sandbox.SandboxError as exc:
            result["sandbox"] = "none: %s" % (exc,)
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
            sandbox_kind=args.sandbox,
            max_procs=args.max_procs,
            sdist_url=args.sdist_url,
            sdist_sha256=args.sdist_sha256,
            frontend=args.frontend,
            deps_cache=args.deps_cache,
            deps_cache_mb=args.deps_cache_mb,
            ccache_remote=args.ccache_remote,
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
