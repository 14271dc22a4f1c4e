"""Fetch the sdist of a build and prove it is the file the index described (its sha256).

The agent does this itself, outside the sandbox, so that a download that fails or differs
from the index's hash is told apart from the project's own failure by the agent's own check,
never by the text of pip's log.

Shipped to builders with the rest of this folder: stdlib-only, Python 2.7 and 3.4+, type
comments only.
"""

from __future__ import absolute_import, division, print_function

import errno
import hashlib
import os
import re
import stat
import time

try:
    from urllib.parse import unquote, urlsplit
    from urllib.request import url2pathname, urlopen
except ImportError:  # pragma: no cover - Python 2.7 builders
    from urllib import unquote, url2pathname  # type: ignore[attr-defined, no-redef]

    from urllib2 import urlopen  # type: ignore[import-not-found, no-redef]
    from urlparse import urlsplit  # type: ignore[import-not-found, no-redef]

try:
    from typing import Any, Optional  # noqa: F401 - used in type comments
except ImportError:  # pragma: no cover - Python 2.7/3.4 builders without typing
    pass

# An sdist file name as the agent saves it: no path, one of the formats pip builds.
SDIST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+!-]*\.(tar\.gz|zip|tar\.bz2|tgz)$")
SDIST_MAX_BYTES = 2 << 30
DOWNLOAD_TRIES = 3
DOWNLOAD_TIMEOUT = 60.0


class DownloadError(Exception):
    """The sdist could not be fetched, or was not the file the index described."""

    def __init__(self, message, mismatch):
        # type: (str, bool) -> None
        Exception.__init__(self, message)
        self.mismatch = mismatch  # the bytes differ from the index's hash, every time


def fetch_sdist(url, sha256, folder, opening=None):
    # type: (str, Optional[str], str, Any) -> str
    """Download the sdist at ``url`` into ``folder`` and check its sha256 (tried three times);
    its path. ``opening`` makes the context manager the URL is opened in (a root agent run through
    sudo opens it as the user who ran it: a ``file:`` URL reads only what that user may)."""
    filename = unquote(url.split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1])
    if url.split(":", 1)[0].lower() not in ("http", "https", "file"):
        raise DownloadError("%r: not an http(s) or file URL" % url[:200], True)
    if not SDIST_NAME.match(filename):
        raise DownloadError("%r: not an sdist file name" % filename, True)
    target = os.path.join(folder, filename)
    error = ""
    for attempt in range(DOWNLOAD_TRIES):
        if attempt:
            time.sleep(2**attempt)
        try:
            digest = _download(url, target, opening)
        except (IOError, OSError, ValueError) as exc:  # URLError and timeouts are IOErrors
            error = "%s: %s" % (url, exc)
            continue
        if sha256 is None or digest == sha256.lower():
            return target
        error = "%s: sha256 %s, the index says %s" % (url, digest, sha256)
    raise DownloadError(error, "sha256" in error)


def _download(url, target, opening):
    # type: (str, str, Any) -> str
    digest = hashlib.sha256()
    size = 0
    fetch = _open_file if url.split(":", 1)[0].lower() == "file" else _open_http
    if opening is None:
        response = fetch(url)
    else:
        with opening():
            response = fetch(url)
    try:
        with open(target, "wb") as f:
            while True:
                chunk = response.read(1 << 20)
                if not chunk:
                    break
                size += len(chunk)
                if size > SDIST_MAX_BYTES:
                    raise ValueError("larger than %d bytes" % SDIST_MAX_BYTES)
                digest.update(chunk)
                f.write(chunk)
    finally:
        response.close()
    return digest.hexdigest()


def _open_http(url):
    # type: (str) -> Any
    return urlopen(url, timeout=DOWNLOAD_TIMEOUT)


def _open_file(url):
    # type: (str) -> Any
    """The regular file a ``file:`` URL names, opened for reading: never through a symbolic link
    (a folder upstream's link to ``/etc/shadow`` is not copied by a root agent), nor a FIFO or a
    device, nor on another host. Those are refused at once (DownloadError, the project's record,
    not tried again); a file that cannot be read is an OSError like any download's."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise DownloadError("%s: a file: URL of another host" % url[:200], True)
    path = url2pathname(parts.path)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DownloadError("%s: a symbolic link: not followed" % url[:200], True)
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DownloadError("%s: not a regular file" % url[:200], True)
    return os.fdopen(fd, "rb")
