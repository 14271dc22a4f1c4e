"""What every upstream offers (the Upstream protocol), and ``open_upstream``: an index URL or a folder."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..errors import UpstreamError

if TYPE_CHECKING:
    from .page import IndexPage

# Project pages fetched at once by a sync (and HTTP connections kept to the upstream).
WORKERS = 8


class Upstream(Protocol):
    """Reads the upstream's projects, versions and files; a context manager that closes it."""

    location: str  # as given: an index URL (trailing slash) or a folder
    workers: int  # how many pages a sync may fetch at once (threads may share the upstream)

    def __enter__(self) -> Upstream: ...

    def __exit__(self, *exc_info: object) -> None: ...

    def close(self) -> None:
        """Release what reading the upstream holds (HTTP connections)."""

    def project(
        self, name: str, etag: str | None = None, last_modified: str | None = None
    ) -> IndexPage | None:
        """The project's page, or None when it is unchanged since the page that had ``etag``
        (or was last modified at ``last_modified``): ProjectGone when the upstream has no such
        project, InputError when ``name`` is not a project name. Safe to call from several
        threads at once."""

    def serials(self) -> dict[str, int] | None:
        """Every project's last serial (canonical name -> serial), or None when the upstream
        does not offer serials: then each page must be asked for."""

    def project_names(self) -> Iterator[tuple[str, str]]:
        """Every project of the upstream as (canonical name, display name), streamed."""

    def download(self, url: str, dest: Path, *, sha256: str, limit: int, seconds: float) -> int:
        """Fetch the file at ``url`` (listed on a project page) to ``dest``; its size.

        The whole fetch has ``seconds``, the file ``limit`` bytes, and it must have the
        ``sha256`` the page listed: UpstreamError otherwise (``dest`` is then removed). A local
        folder's files are read from that folder only, an index's over HTTP(S) only.
        """


def open_upstream(
    location: str,
    *,
    timeout: float = 30.0,
    redirect_hosts: Iterable[str] = (),
    workers: int = WORKERS,
) -> Upstream:
    """The upstream at ``location``: a PEP 691/503 index URL (http or https, trailing slash) or
    else a local folder of sdists and wheels. ``timeout`` and ``redirect_hosts`` bound an index
    (see IndexUpstream); a folder has no use for them."""
    # Imported here: an index needs the HTTP client, a folder does not (and both use save_checked).
    if location.startswith(("http://", "https://")):
        from .index import IndexUpstream

        return IndexUpstream(location, timeout=timeout, redirect_hosts=redirect_hosts, workers=workers)
    from .folder import FolderUpstream

    return FolderUpstream(location, workers=workers)


def save_checked(chunks: Iterable[bytes], url: str, dest: Path, sha256: str) -> int:
    """Write the file at ``url``, read as ``chunks``, to ``dest``; its size. UpstreamError unless
    its digest is ``sha256``; ``dest`` is removed on any failure."""
    digest = hashlib.sha256()
    size = 0
    try:
        with open(dest, "wb") as out:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:
            raise UpstreamError(
                f"{url}: sha256 {digest.hexdigest()} differs from the {sha256} the upstream lists"
            )
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return size
