"""What a build runs: its frontend's command (uv's or pip's) and the environment it runs in.

Shipped to builders with the rest of this folder: stdlib-only, Python 2.7 and 3.4+, type
comments only.
"""

from __future__ import absolute_import, division, print_function

import calendar
import os
import shutil
import tarfile
import tempfile
import zipfile

if __package__:  # the local builder: imported as part of piwheels_ctl
    from . import buildnet, compilers, remotecache, sdistfetch
else:  # on a builder: the files sent beside this one
    import buildnet  # type: ignore[import-not-found, no-redef]
    import compilers  # type: ignore[import-not-found, no-redef]
    import remotecache  # type: ignore[import-not-found, no-redef]
    import sdistfetch  # type: ignore[import-not-found, no-redef]

try:
    from urllib.parse import urlsplit
except ImportError:  # pragma: no cover - Python 2.7 builders
    from urlparse import urlsplit  # type: ignore[import-not-found, no-redef]

try:
    from typing import Any, Dict, List, Optional  # noqa: F401 - used in type comments
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

# Where Debian, Ubuntu, Raspberry Pi OS, Alpine (and Fedora, RHEL) keep the system's trust store:
# the one store uv's --system-certs reads, given to pip too (pip 20.3.4 otherwise trusts only
# the bundle it vendors).
SYSTEM_CA_FILES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
                   "/etc/ssl/cert.pem")  # fmt: skip


def build_env(box, base_dir, ccache_dir, project_cache, index_url, find_links, deps=None, remote=False):
    # type: (str, str, Optional[str], Optional[str], Optional[str], List[str], Optional[str], bool) -> Dict[str, str]
    """The whole environment of a build: a throwaway HOME and TMPDIR, ccache set up to hit
    (``remote``: also in the farm's shared cache, through the build's proxy)."""
    env = dict((k, os.environ[k]) for k in PASS_ENV if k in os.environ)
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(trust_env(trust_store()))  # one store for uv, pip and the build, whatever was passed
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


def trust_store():
    # type: () -> Optional[str]
    """The CA file every build trusts: ``SSL_CERT_FILE`` where set, else the system's; None where
    there is neither (the frontends' own bundles then)."""
    named = os.environ.get("SSL_CERT_FILE")
    if named and os.path.isfile(named):
        return named
    for path in SYSTEM_CA_FILES:
        if os.path.isfile(path):
            return path
    return None


def trust_env(store):
    # type: (Optional[str]) -> Dict[str, str]
    """The variables that make uv, every pip (20.3.4 on Python 2.7 included) and the build's own
    downloads trust ``store``, and nothing else."""
    if store is None:
        return {}
    return {"SSL_CERT_FILE": store, "PIP_CERT": store, "REQUESTS_CA_BUNDLE": store}


# How pip (requests and urllib3, on 2.7's ssl and 3's) and uv (rustls) say a certificate was
# not trusted; the lines above the one that says so, where the host's URL is (uv's error chain).
TLS_MARKERS = ("certificate verify failed", "invalid peer certificate", "CERTIFICATE_VERIFY_FAILED")
TLS_CONTEXT_LINES = 8
TLS_TAIL_BYTES = 256 * 1024


def tls_refusal(log_path, urls, store):
    # type: (str, List[str], Optional[str]) -> Optional[str]
    """Why the build's log says a host of the farm's own (the job's index or find-links URLs)
    failed TLS, worded as the controller words it (``fetcher.tls_failure``); None where it does
    not. A host the project reached by itself is the project's business."""
    hosts = {}  # type: Dict[str, str]
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme == "https" and parts.hostname:
            name = "[%s]" % parts.hostname if ":" in parts.hostname else parts.hostname
            hosts[parts.netloc.rsplit("@", 1)[-1]] = name
    if not hosts:
        return None
    try:
        with open(log_path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - TLS_TAIL_BYTES))
            lines = log.read().decode("utf-8", "replace").splitlines()
    except (IOError, OSError):
        return None
    for number, line in enumerate(lines):
        marker = next((m for m in TLS_MARKERS if m in line), None)
        if marker is None:
            continue
        context = "\n".join(lines[max(0, number - TLS_CONTEXT_LINES) : number + 1])
        for netloc, name in sorted(hosts.items()):
            if "https://" + netloc in context or "'%s'" % name in context:
                said = line[line.index(marker) :].split("')", 1)[0].split("'\"", 1)[0].strip()
                return tls_message(name.strip("[]"), said[:200], store or "the frontends' own")
    return None


def tls_message(host, reason, store):
    # type: (str, str, str) -> str
    """A failed TLS handshake, as the controller and the agent say it: that it is one, with which
    host, against which CA file, and what to do about it."""
    return ("TLS failure with %s: %s (trusting the CA file %s; a proxy that inspects TLS needs its CA "
            "there, or SSL_CERT_FILE set to a file that holds it)" % (host, reason, store))  # fmt: skip


def exec_refusal(log_path, python):
    # type: (str, str) -> Optional[str]
    """Why the build's sandbox could not start ``python``, as its log's first lines say
    (bubblewrap's ``execvp``, setpriv's ``failed to execute``); None where they do not."""
    try:
        with open(log_path, "rb") as log:
            head = log.read(8192).decode("utf-8", "replace")
    except (IOError, OSError):
        return None
    for line in head.splitlines():
        if ("execvp %s:" % python) in line or ("failed to execute %s:" % python) in line:
            return "the sandbox could not start the interpreter: %s" % line.strip()[:300]
    return None


def source_date_epoch(sdist):
    # type: (str) -> Optional[str]
    """SOURCE_DATE_EPOCH for a build of ``sdist``: the newest mtime of its members (PKG-INFO's
    among them), the same on every builder, so that wheel and setuptools write the same zip
    timestamps whenever the same code is built again; None if it cannot be read."""
    newest = 0
    try:
        if sdist.endswith(".zip"):
            with zipfile.ZipFile(sdist) as zipped:
                for info in zipped.infolist():
                    newest = max(newest, int(_zip_seconds(info.date_time)))
        else:
            tarred = tarfile.open(sdist)  # noqa: SIM115 - Python 2.7's TarFile is no context manager
            try:
                for member in tarred.getmembers():
                    newest = max(newest, int(member.mtime))
            finally:
                tarred.close()
    except (OSError, EOFError, tarfile.TarError, zipfile.BadZipfile, ValueError, OverflowError):
        return None
    # zip files hold no time before 1980: wheel clamps to it, and so does this.
    return str(max(newest, 315532800)) if newest else None


def _zip_seconds(date_time):
    # type: (Any) -> float
    return calendar.timegm(tuple(date_time) + (0, 0, 0))


def common_folder(folders):
    # type: (List[str]) -> str
    """The deepest folder that holds every one of ``folders``."""
    parts = [os.path.abspath(f).split(os.sep) for f in folders]
    common = []  # type: List[str]
    for names in zip(*parts):  # noqa: B905 - Python 2.7's zip() takes no strict=
        if len(set(names)) != 1:
            break
        common.append(names[0])
    return os.sep.join(common) or os.sep


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
            archive.extractall(partial)  # noqa: S202 - a zip (the frontend's wheel), whose names zipfile keeps inside
        uv = uv_binary(partial)
        if uv is not None:  # zip files keep no modes: uv's binary is made runnable here
            os.chmod(uv, 0o755)  # noqa: S103 - run by every build's uid
        os.chmod(partial, 0o755)  # noqa: S103 - read by every build's uid
        try:
            os.rename(partial, folder)
        except OSError:  # another build unpacked it meanwhile
            shutil.rmtree(partial, ignore_errors=True)
    return folder


def uv_binary(folder):
    # type: (str) -> Optional[str]
    """The uv binary in an unpacked uv wheel (``uv-V.data/scripts/uv``), None in pip's."""
    if not os.path.basename(folder).startswith(("uv-", ".unpack-")):
        return None
    for entry in os.listdir(folder):
        candidate = os.path.join(folder, entry, "scripts", "uv")
        if entry.endswith(".data") and os.path.isfile(candidate):
            return candidate
    return None


def frontend_command(request, frontend_dir, wheels, wanted, deps, env, site):
    # type: (Any, Optional[str], str, List[str], Optional[str], Dict[str, str], Dict[str, str]) -> List[str]
    """The command that builds ``wanted`` into ``wheels`` with the request's frontend (unpacked in
    ``frontend_dir``), ``env`` set for it: uv where the controller sent uv, else the pinned pip
    (or the interpreter's own). ``site``: what the build backend's Python should start with (uv
    passes it on, pip not)."""
    uv = uv_binary(frontend_dir) if frontend_dir else None
    if uv is not None:
        env.update(site)
        command = [uv, "build", "--wheel", "--no-config", "--no-python-downloads", "--python", request.python,
                   "--out-dir", wheels, "--system-certs"]  # fmt: skip
        command += ["--cache-dir", deps] if deps else ["--no-cache"]
        command += ["--default-index", request.index_url] if request.index_url else ["--no-index"]
        for link in request.find_links:
            command += ["--find-links", link]
        return command + wanted
    command = [request.python, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", wheels]
    command += ["--cache-dir", deps] if deps else ["--no-cache-dir"]
    if frontend_dir:  # the pinned pip (frontend.py), whatever the builder has, isolated PEP 517 builds
        env["PYTHONPATH"] = frontend_dir
        command.append("--use-pep517")
    return command + wanted
