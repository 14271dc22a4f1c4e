"""Read a local folder of sdists and wheels as an upstream: each project's page made from its files."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, NamedTuple
from urllib.parse import urlsplit
from urllib.request import url2pathname

import pypi_simple
from packaging.utils import canonicalize_name

from ..errors import ProjectGone, UpstreamError
from ..files import sha256_of_stream
from .page import SDIST_SUFFIXES, IndexPage, check_name, releases
from .source import WORKERS, save_checked

LOCAL_SUFFIXES = (*SDIST_SUFFIXES, ".whl")

logger = logging.getLogger(__name__)


class _LocalFile(NamedTuple):
    """A distribution file in a local upstream folder, its name parsed."""

    path: Path
    project: str  # as spelled in the filename
    version: str  # as spelled in the filename
    package_type: str  # "sdist", "wheel", ... as pypi-simple tells them apart
    stat: os.stat_result


class FolderUpstream:
    """An Upstream read from a local folder: no serials, ETags made from names, sizes and times."""

    def __init__(self, location: str, *, workers: int = WORKERS) -> None:
        self.location = location
        self.workers = workers  # how many pages a sync may read at once (threads may share this)
        self._folder = Path(location)

    def __enter__(self) -> FolderUpstream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release: a folder holds no connections."""

    def project(
        self, name: str, etag: str | None = None, last_modified: str | None = None
    ) -> IndexPage | None:
        """The project's page made from its files in the folder (see Upstream.project);
        ``last_modified`` is not used: the ETag stands for the files."""
        check_name(name)
        folder = self._folder
        canonical = canonicalize_name(name)
        files = [f for f in _local_files(folder) if canonicalize_name(f.project) == canonical]
        if not files:
            raise ProjectGone(f"{name}: the upstream {self.location} has no such project")
        # Names, sizes and times stand for the contents: hashing every file on every sync of a
        # big folder would cost far more than it saves.
        digest = hashlib.sha256()
        for file in files:
            digest.update(f"{file.path.name}\0{file.stat.st_size}\0{file.stat.st_mtime_ns}\n".encode())
        new_etag = digest.hexdigest()
        if new_etag == etag:
            return None
        try:
            packages = [
                pypi_simple.DistributionPackage(
                    filename=file.path.name,
                    url=file.path.as_uri(),
                    project=file.project,
                    version=file.version,
                    package_type=file.package_type,
                    digests={"sha256": _sha256(file.path)},
                    requires_python=None,
                    has_sig=None,
                    size=file.stat.st_size,
                    upload_time=datetime.fromtimestamp(file.stat.st_mtime, timezone.utc),
                )
                for file in files
            ]
        except OSError as exc:
            raise UpstreamError(f"{folder}: cannot read the upstream folder: {exc}") from exc
        return IndexPage(
            name=canonical,
            display_name=files[0].project,
            releases=releases(packages, [], str(folder), ("file",)),
            etag=new_etag,
        )

    def serials(self) -> dict[str, int] | None:
        """None: a folder has no serials, so each page is asked for."""
        return None

    def download(self, url: str, dest: Path, *, sha256: str, limit: int, seconds: float) -> int:
        """Copy the folder's file at the ``file:`` URL ``url`` to ``dest`` (see Upstream.download);
        its size. ``seconds`` is not used: a local read is not bounded in time."""
        return save_checked(self._file_chunks(url, limit), url, dest, sha256)

    def _file_chunks(self, url: str, limit: int) -> Iterator[bytes]:
        scheme = urlsplit(url).scheme
        path = Path(url2pathname(urlsplit(url).path)) if scheme == "file" else None
        if path is None or path.parent != self._folder.resolve():
            raise UpstreamError(f"{url}: not a file of the upstream folder {self._folder}")
        try:
            with _open_own(path) as f:
                read = 0
                while chunk := f.read(1 << 20):
                    read += len(chunk)
                    if read > limit:
                        raise UpstreamError(f"{url}: the file is larger than the {limit:,} bytes allowed")
                    yield chunk
        except OSError as exc:
            raise UpstreamError(f"{url}: cannot read the upstream's file: {exc}") from exc

    def project_names(self) -> Iterator[tuple[str, str]]:
        """Every project with a file in the folder as (canonical name, display name), by name."""
        names: dict[str, str] = {}
        for file in _local_files(self._folder, warn=True):
            names.setdefault(canonicalize_name(file.project), file.project)
        yield from sorted(names.items())


def _open_own(path: Path) -> BinaryIO:
    """The regular file at ``path`` opened for reading, never through a symbolic link (one put
    in place of the file since the folder was listed) nor a FIFO that would hang the read."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return os.fdopen(fd, "rb")


def _sha256(path: Path) -> str:
    """The sha256 of the folder's file at ``path`` (opened as _open_own does)."""
    with _open_own(path) as f:
        return sha256_of_stream(f)[1]


def _local_files(folder: Path, *, warn: bool = False) -> list[_LocalFile]:
    """The sdists and wheels in the folder whose names parse, sorted by filename."""
    files = []
    try:
        for path in sorted(folder.iterdir()):
            if not path.name.endswith(LOCAL_SUFFIXES):
                continue
            info = path.lstat()
            if not stat.S_ISREG(info.st_mode):
                if stat.S_ISLNK(info.st_mode):
                    # A link could list and hand out any file this machine holds (to a root agent).
                    logger.log(
                        logging.WARNING if warn else logging.DEBUG,
                        "%s: ignored: a symbolic link (an upstream folder's files are its own)",
                        path,
                    )
                continue
            try:
                project, version, package_type = pypi_simple.parse_filename(path.name)
            except pypi_simple.UnparsableFilenameError:
                # Said once per listing of all projects, not again for each project.
                logger.log(
                    logging.WARNING if warn else logging.DEBUG,
                    "%s: ignored: not a distribution filename",
                    path,
                )
                continue
            files.append(_LocalFile(path, project, version, package_type, info))
    except OSError as exc:
        raise UpstreamError(f"{folder}: cannot read the upstream folder: {exc}") from exc
    return files
