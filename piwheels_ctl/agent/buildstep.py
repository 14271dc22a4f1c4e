"""The build step: turn one sdist into wheels in a throwaway folder and answer what came of it.

The local builder runs it in-process; on a builder ``agent.py build`` runs it. Shipped to
builders with the rest of this folder: stdlib-only, Python 2.7 and 3.4+, type comments only.
"""

from __future__ import absolute_import, division, print_function

import collections
import os
import re
import shutil
import time

if __package__:  # the local builder: imported as part of piwheels_ctl
    from . import (
        buildenv,
        buildnet,
        buildplatform,
        compilers,
        crossbuild,
        depscache,
        loadcheck,
        netpolicy,
        outbox,
        remotecache,
        repairwheel,
        requirespython,
        sandbox,
        sdistfetch,
        supervise,
        workdirs,
    )
else:  # on a builder: the files sent beside this one
    import buildenv  # type: ignore[import-not-found, no-redef]
    import buildnet  # type: ignore[import-not-found, no-redef]
    import buildplatform  # type: ignore[import-not-found, no-redef]
    import compilers  # type: ignore[import-not-found, no-redef]
    import crossbuild  # type: ignore[import-not-found, no-redef]
    import depscache  # type: ignore[import-not-found, no-redef]
    import loadcheck  # type: ignore[import-not-found, no-redef]
    import netpolicy  # type: ignore[import-not-found, no-redef]
    import outbox  # type: ignore[import-not-found, no-redef]
    import remotecache  # type: ignore[import-not-found, no-redef]
    import repairwheel  # type: ignore[import-not-found, no-redef]
    import requirespython  # type: ignore[import-not-found, no-redef]
    import sandbox  # type: ignore[import-not-found, no-redef]
    import sdistfetch  # type: ignore[import-not-found, no-redef]
    import supervise  # type: ignore[import-not-found, no-redef]
    import workdirs  # type: ignore[import-not-found, no-redef]

try:
    from typing import Any, Callable, Dict, List, Optional, Tuple  # noqa: F401 - used in type comments
except ImportError:  # pragma: no cover - Python 2.7/3.4 builders without typing
    pass

# Project names and versions as the controller sends them (canonical names, PEP 440 versions):
# nothing a shell or a path could misread, checked again here.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+!-]*$")

# What the agent made ready for one build, beside its request: the build's folder (``work``)
# and the only one it may write to (``box``), its sandbox and uid, the SSH user the agent acts
# as through sudo, the fetched sdist, the unpacked frontend, and the project's cache folders.
Setup = collections.namedtuple(
    "Setup",
    "work kind uid user on_start sdist frontend_dir personality box wheels project_cache deps remote",
)


def build(request, on_start=None):
    # type: (Any, Optional[Callable[[int], None]]) -> Dict[str, Any]
    """Build NAME==VERSION of ``request`` (a ``jobspec.Request``) in a sandbox into its outbox;
    return the controller's answer.

    ``on_start`` is called with the pid of the build's process group. An answer with status
    "error" is the builder's fault (no sandbox, too little disk), not the project's: build it
    elsewhere. "busy": the load per CPU is at ``max_load``; nothing was started.
    """
    if not SAFE_NAME.match(request.name) or not SAFE_NAME.match(request.version):
        return outbox.builder_error("refused: %r %r is not a project name and version"
                                    % (request.name, request.version))  # fmt: skip
    # The interpreter's real path on this builder: a path through ".." or a symlinked folder
    # outside what the sandbox shows would fail every build, and it is no project's fault.
    request = request._replace(
        find_links=list(request.find_links), python=sandbox.canonical_python(request.python)
    )
    if not os.access(request.python, os.X_OK):
        return outbox.builder_error("cannot run the interpreter %s: no such program here" % request.python)
    load = workdirs.load_per_cpu() if request.max_load is not None else None
    if load is not None and load >= request.max_load:
        message = "load %.2f per CPU, at or above this builder's bound of %.2f" % (load, request.max_load)
        return dict(outbox.builder_error(message), status="busy", load=load)
    user = workdirs.invoking_user()
    if user is not None:  # root through sudo: root's own folders only, for the build's uid
        problem = workdirs.check_root_folders(request.work_root, request.ccache_dir, request.deps_cache)
        if problem:
            return outbox.builder_error("refused as root through sudo: %s (the builder role makes it)"
                                        % problem)  # fmt: skip
    workdirs.makedirs(request.work_root)
    with workdirs.as_user(user):
        workdirs.makedirs(request.outbox)
    free_mb = workdirs.free_space_mb(request.work_root)
    if free_mb < request.min_free_mb:
        return outbox.builder_error("disk full: %d MB free in %s, %d MB needed"
                                    % (free_mb, request.work_root, request.min_free_mb))  # fmt: skip
    try:
        kind = sandbox.choose(request.sandbox_kind)[0]
    except sandbox.SandboxError as exc:
        return outbox.builder_error("sandbox: %s" % (exc,))
    unreadable = sandbox.unreadable_by_builds(request.python, kind) if os.geteuid() == 0 else None
    if unreadable:  # the interpreter's fault, found again at each build: never the project's
        return outbox.builder_error("the build's uid cannot run %s: %s (%s)"
                                    % (request.python, unreadable, sandbox.UNREADABLE_FIX))  # fmt: skip
    try:
        uid, uid_lock = sandbox.lease_uid() if os.geteuid() == 0 else (None, None)
    except sandbox.SandboxError as exc:
        return outbox.builder_error("sandbox: %s" % (exc,))
    try:
        with workdirs.locked_workdir(request.work_root) as work:
            box = os.path.join(work, "build")  # the only folder the build may write to
            setup = Setup(
                work=work, kind=kind, uid=uid, user=user, on_start=on_start, sdist=None, frontend_dir=None,
                personality=buildplatform.build_personality(), box=box, wheels=os.path.join(box, "wheels"),
                project_cache=None, deps=None, remote=None,
            )  # fmt: skip
            if request.check_wheel:
                return _check_only(request, setup)
            return _fetch_and_build(request, setup)
    finally:
        if uid_lock is not None:
            uid_lock.close()


def _check_only(request, setup):
    # type: (Any, Any) -> Dict[str, Any]
    """A check job: the load check of the wheel at ``request.check_wheel`` (read as the SSH user)
    and nothing else. Its status is "success" when the check ran, whatever it found (that is its
    "load_check"), "error" when it could not run."""
    path = request.check_wheel
    if not os.path.isabs(path) or not outbox.WHEEL_NAME.match(os.path.basename(path)):
        return outbox.builder_error("refused: --check-wheel %r is not the absolute path of a wheel" % (path,))
    started = time.time()
    try:
        with workdirs.as_user(setup.user):
            wheel = open(path, "rb")  # noqa: SIM115 - opened as the user, closed below
    except (IOError, OSError) as exc:
        return outbox.builder_error("cannot read the wheel to check: %s" % (exc,))
    try:
        with wheel:
            check = _load_check(request, setup, [wheel])
    except OSError as exc:
        return outbox.builder_error("cannot start the load check: %s" % (exc,))
    return {"status": "success", "files": [], "duration": time.time() - started, "timed_out": False,
            "log": request.log_path, "sandbox": setup.kind, "load_check": check,
            "platform": buildplatform.build_facts(request.python)}  # fmt: skip


def _load_check(request, setup, wheels):
    # type: (Any, Any, List[Any]) -> Dict[str, Any]
    """The load check of ``wheels`` in the build's walls and limits, written to its log."""
    check = loadcheck.check(request.python, wheels, setup.work, setup.kind, setup.uid,
                            setup.personality is not None, request.timeout, request.memory_mb,
                            request.max_procs)  # fmt: skip
    with workdirs.as_user(setup.user), open(request.log_path, "ab") as log:
        log.write(loadcheck.log_lines(check).encode("utf-8"))
    return check


def _fetch_and_build(request, setup):
    # type: (Any, Any) -> Dict[str, Any]
    """Fetch the sdist and unpack the frontend, then build; a failed download is the builder's
    fault, an sdist that is not what the index says the project's."""
    try:
        if request.sdist_url:
            user = setup.user  # a file: URL is read as the SSH user: only what that user may read
            sdist = sdistfetch.fetch_sdist(request.sdist_url, request.sdist_sha256, setup.work,
                                           lambda: workdirs.as_user(user))  # fmt: skip
            setup = setup._replace(sdist=sdist)
        with workdirs.as_user(setup.user):
            frontend_dir = request.frontend and buildenv.unpack_frontend(request.frontend)
        return _build(request, setup._replace(frontend_dir=frontend_dir))
    except sdistfetch.DownloadError as exc:
        if exc.mismatch:  # the index's file is not what it says: the project's record
            return dict(outbox.builder_error(str(exc)), status="failed", download_error=str(exc))
        return outbox.builder_error("download: %s" % (exc,))


def _build(request, setup):
    # type: (Any, Any) -> Dict[str, Any]
    """The build in ``setup``'s folders, with the project's caches where no other build has them."""
    for sub in (setup.box, os.path.join(setup.box, "home"), os.path.join(setup.box, "tmp"), setup.wheels):
        workdirs.makedirs(sub)
    os.chmod(setup.work, 0o711)  # noqa: S103 - the build's uid passes through to its folder, sees nothing else
    ccache_lock = workdirs.project_cache(request.ccache_dir, request.name)
    with ccache_lock as project_cache, workdirs.project_cache(request.deps_cache, request.name) as deps:
        # The shared cache only behind the proxy (a sandbox with its own network): a build
        # without one could reach the cache, or learn its URL, by itself.
        remote = None
        if project_cache and request.ccache_remote and setup.kind == "bwrap":
            remote = remotecache.Forwarder(request.ccache_remote, request.name, request.ccache_remote_mb,
                                           request.ccache_remote_objects)  # fmt: skip
        result = _build_in(request, setup._replace(project_cache=project_cache, deps=deps, remote=remote))
    if request.deps_cache and request.deps_cache_mb:
        depscache.prune(request.deps_cache, request.deps_cache_mb)
    return result


def _build_in(request, setup):
    # type: (Any, Any) -> Dict[str, Any]
    """Run the frontend on the build's sdist in its sandbox and answer what came of it."""
    if setup.uid is not None:  # the agent is root: the build's uid owns the build's folders
        for folder in (setup.box, setup.project_cache, setup.deps):
            if folder:
                workdirs.chown_tree(folder, setup.uid)
    base_dir = buildenv.common_folder([request.work_root] + ([request.deps_cache] if setup.deps else []))
    env = buildenv.build_env(setup.box, base_dir, request.ccache_dir, setup.project_cache, request.index_url,
                             request.find_links, setup.deps, setup.remote is not None)  # fmt: skip
    wanted = _wanted(request, setup)
    epoch = buildenv.source_date_epoch(wanted[0]) if setup.sdist is not None else None
    if epoch:  # the same code built again gives the same bytes (zip times), on every builder
        env["SOURCE_DATE_EPOCH"] = epoch
    site = compilers.cython_env(setup.box, setup.project_cache) if setup.project_cache else {}
    deps = setup.deps
    command = buildenv.frontend_command(request, setup.frontend_dir, setup.wheels, wanted, deps, env, site)
    if setup.personality:  # setup.py and bdist_wheel name the userland's platform, not the kernel's
        env["_PYTHON_HOST_PLATFORM"] = setup.personality
    if request.cross:  # the target's sysconfig, platform and toolchain (crossbuild)
        try:
            env.update(crossbuild.environment(request.python, request.cross))
        except crossbuild.CrossError as exc:
            return outbox.builder_error("cross: %s" % (exc,))
    proxy = None
    if setup.kind == "bwrap":
        policy = netpolicy.for_job(request, setup.remote.cache.host if setup.remote is not None else None)
        proxy = buildnet.Proxy(os.path.join(setup.work, "proxy.sock"), policy, setup.remote)
        env.update(buildnet.proxy_env())
        argv = _sandbox_argv(request, setup, command, proxy.path)
    else:
        argv = command
    started = time.time()
    counts = compilers.ccache_counts(setup.project_cache, request.ccache_dir)
    try:
        finished, ccache = _run_logged(request, setup, command, argv, env, counts)
    except OSError as exc:  # the sandbox or the interpreter could not be started
        return outbox.builder_error("cannot start the build: %s" % (exc,))
    finally:
        if proxy is not None:
            proxy.close()
    return _result(request, setup, command, finished, ccache, proxy, time.time() - started)


def _wanted(request, setup):
    # type: (Any, Any) -> List[str]
    """What the frontend builds: the fetched sdist (checked by the agent), moved into the build's
    folder where the build can read it, else NAME==VERSION from the index."""
    if setup.sdist is None:
        return ["--no-binary", request.name, "%s==%s" % (request.name, request.version)]
    target = os.path.join(setup.box, os.path.basename(setup.sdist))
    shutil.move(setup.sdist, target)
    if setup.uid is not None:
        os.lchown(target, setup.uid, setup.uid)
    return [target]


def _sandbox_argv(request, setup, command, proxy_path):
    # type: (Any, Any, List[str], str) -> List[str]
    """``command`` in bubblewrap: the build writes its own folders only, reads the interpreter,
    the frontend and the local find-links, and reaches the network through the proxy."""
    read_only = sandbox.interpreter_dirs(request.python)
    read_only += [setup.frontend_dir] if setup.frontend_dir else []
    read_only += [link for link in request.find_links if link.startswith("/")]
    store = buildenv.trust_store()
    read_only += [store] if store and not store.startswith("/etc/") else []  # /etc's is bound already
    if request.ccache_dir:
        read_only.append(os.path.join(request.ccache_dir, "ccache.conf"))
    return sandbox.bwrap_command(
        buildnet.relay_command(request.python, command, request.max_procs + supervise.NPROC_MARGIN),
        setup.box,
        [setup.box] + [f for f in (setup.project_cache, setup.deps) if f],
        read_only,
        [(proxy_path, buildnet.PROXY_SOCKET)],
        setup.uid,
    )


def _run_logged(request, setup, command, argv, env, counts):
    # type: (Any, Any, List[str], List[str], Dict[str, str], Any) -> Tuple[Any, Optional[Dict[str, int]]]
    """Run ``argv`` within the request's limits into its log (opened as the SSH user), and the
    compiler cache's hits and misses since ``counts``, written to the log as well."""
    with workdirs.as_user(setup.user):
        log = open(request.log_path, "wb")  # noqa: SIM115 - opened as the user, closed below
    with log:
        log.write(("$ %s\n" % " ".join(command)).encode())
        finished = supervise.run(
            argv, env, setup.box, log, request.timeout, request.memory_mb, request.max_procs,
            request.log_max_bytes, uid=setup.uid if setup.kind == "user" else None, on_start=setup.on_start,
            personality=setup.personality is not None,
        )  # fmt: skip
        after = compilers.ccache_counts(setup.project_cache, request.ccache_dir)
        ccache = compilers.counts_delta(counts, after)
        if ccache is not None and ccache["hits"] + ccache["misses"]:
            log.write(("\n[piwheels] ccache: %d hits, %d misses (%d%%)\n" % (
                ccache["hits"], ccache["misses"],
                100 * ccache["hits"] // (ccache["hits"] + ccache["misses"]))).encode())  # fmt: skip
        if setup.remote is not None:
            log.write(setup.remote.summary().encode() + b"\n")
    return finished, ccache


def _wheels(request, setup, command):
    # type: (Any, Any, List[str]) -> List[Dict[str, Any]]
    """The wheels of a build that succeeded, in the outbox with their runtime dependencies; none
    where the interpreter's Requires-Python refuses them (uv builds what pip refuses)."""
    with workdirs.as_user(setup.user):
        files = outbox.collect(setup.wheels, request.outbox)  # read nothing the build left before this
    built = [os.path.join(request.outbox, f["name"]) for f in files]
    refusal = requirespython.refusal(request.python, built) if command[0] != request.python else None
    with workdirs.as_user(setup.user):
        if refusal is None:
            outbox.add_elf(files, request.outbox)
            outbox.add_deps(files, request.outbox)
            return files
        for path in built:  # the same outcome as pip's refusal
            os.remove(path)
        with open(request.log_path, "ab") as log:
            log.write(("ERROR: %s\n" % refusal).encode())
    return []


def _result(request, setup, command, finished, ccache, proxy, duration):
    # type: (Any, Any, List[str], Any, Optional[Dict[str, int]], Any, float) -> Dict[str, Any]
    """The answer to the controller (``jobspec.ANSWER_KEYS``); the builder's fault where the disk
    is full without the build's own folders."""
    files = []  # type: List[Dict[str, Any]]
    check = None  # type: Optional[Dict[str, Any]]
    repaired, repair_notes = [], []  # type: List[str], List[str]
    if finished.returncode == 0 and not finished.timed_out and finished.limit is None:
        if request.repair_tools:  # portable wheels: repaired before anything else sees them
            with workdirs.as_user(setup.user):
                log = open(request.log_path, "ab")  # noqa: SIM115 - opened as the user, closed below
            with log:
                repaired, repair_notes = repairwheel.repair_all(request, setup, log)
        files = _wheels(request, setup, command)
    if files and request.cross:  # the target loads it (a check job); here its ELF headers only
        refused = crossbuild.elf_refusals(files, request.cross)
        check = {"ok": not refused, "failures": refused, "notes": []}
        if refused:
            with workdirs.as_user(setup.user):
                for entry in files:
                    os.remove(os.path.join(request.outbox, entry["name"]))
            files = []
    elif files:  # every compiled module loads, or no wheel is handed over
        built = [os.path.join(request.outbox, f["name"]) for f in files]
        try:
            check = _load_check(request, setup, built)
        except OSError as exc:
            return outbox.builder_error("cannot start the load check: %s" % (exc,))
        check["notes"] = list(check["notes"]) + repair_notes  # kept with the build, shown on its page
        if not check["ok"]:
            with workdirs.as_user(setup.user):
                for path in built:
                    os.remove(path)
            files = []
    armv6 = any(f["name"].endswith("-linux_armv7l.whl") for f in files) and buildplatform.armv6_userland()
    result = {
        "status": "success" if files else "failed",
        "returncode": finished.returncode,
        "timed_out": finished.timed_out,
        "limit": finished.limit,
        "network": proxy.attempts if proxy is not None else [],
        "sandbox": setup.kind,
        "duration": duration,
        "files": files,
        "log": request.log_path,
        # An ARMv6 userland's armv7l wheels run on ARMv6 too: the controller also publishes them
        # as linux_armv6l (Pi Zero, Pi 1). A Debian armhf (ARMv7) userland's may not.
        "armv6_userland": armv6,
        "ccache": ccache,
        # Requests to the shared compiler cache: get/found, put/stored, refused, over_quota.
        "ccache_remote": setup.remote.counts if setup.remote is not None else None,
        # What tells a wheel the builder made for another machine from one the project tagged so.
        "platform": buildplatform.build_facts(request.python),
        # Every shared object of the wheels loaded as their interpreter loads it (None: no wheel).
        "load_check": check,
        # The wheels auditwheel repaired (manylinux, their libraries grafted in); None: no repair asked.
        "repaired": [n for n in repaired if any(f["name"] == n for f in files)]
        if request.repair_tools
        else None,
        # A cross build (jobspec.CROSS_KEYS): its wheels are load-checked on the target first.
        "cross": {"target": request.cross, "triplet": crossbuild.TARGETS[request.cross]["triplet"]}
        if request.cross
        else None,
    }  # type: Dict[str, Any]
    free_mb = workdirs.free_space_mb(request.work_root)
    if free_mb < max(request.min_free_mb, 1):
        # A build can fill the disk through its project's caches, which outlive it: they go
        # first (this build holds them), so that the builder stays in service for the others.
        for folder in (setup.project_cache, setup.deps):
            if folder:
                supervise.remove_tree(folder)
    if not files:
        # The agent's own check, never the log's text: is the disk full without this build?
        supervise.remove_tree(setup.box)
        free_mb = workdirs.free_space_mb(request.work_root)
        if free_mb < max(request.min_free_mb, 1):
            return outbox.builder_error("disk full: %d MB free in %s after the build"
                                        % (free_mb, request.work_root))  # fmt: skip
        # The farm's own index or find-links not trusted (a proxy's CA missing), or the sandbox
        # could not start the interpreter (bwrap's and setpriv's words): not the project's.
        farm_urls = [request.index_url or ""] + list(request.find_links)
        refusal = buildenv.tls_refusal(request.log_path, farm_urls, buildenv.trust_store())
        if refusal is None and finished.returncode == 127:
            refusal = buildenv.exec_refusal(request.log_path, request.python)
        if refusal is not None and not finished.timed_out:
            return outbox.builder_error(refusal)
    return result
