"""What to install to fix a failure: the Debian packages that ship the missing file.

Read from the release's Contents index on the Debian mirror (``dists/SUITE/main/Contents-ARCH.gz``
and ``Contents-all.gz``), never from a hand-written map. The index is large, so it is streamed
once and only the paths a build can miss are kept, in a small SQLite file per suite and
architecture under the data folder; it is fetched again when older than ``contents_max_days``.
"""

from __future__ import annotations

import gzip
import io
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from pathlib import Path

import requests

from ..errors import PiwheelsError
from ..files import atomic_path

log = logging.getLogger(__name__)

# Which kind of file each reason's detail names.
REASON_KINDS = {
    "missing-header": "header",
    "missing-library": "library",
    "missing-pkg-config": "pkgconfig",
    "missing-program": "program",
    "needs-rust": "program",
    "needs-fortran": "program",
    "needs-cuda": "program",
}
# Wheel platform tag -> Debian architecture (Raspberry Pi OS's 32-bit userland is armhf).
ARCHES = {
    "linux_x86_64": "amd64",
    "linux_aarch64": "arm64",
    "linux_armv7l": "armhf",
    "linux_armv6l": "armhf",
    "linux_i686": "i386",
    "linux_ppc64le": "ppc64el",
    "linux_s390x": "s390x",
}
# Packages suggested for one missing file, at most.
MAX_PACKAGES = 5
SCHEMA_VERSION = "1"

_TRIPLET = r"(?:[a-z0-9_]+-linux-gnu[a-z0-9_]*/)?"
_PATHS = (
    ("header", re.compile(r"^usr/include/" + _TRIPLET + r"(?P<name>.+\.(?:h|hh|hpp|hxx|H|inc))$")),
    ("library", re.compile(r"^(?:usr/)?lib/" + _TRIPLET + r"lib(?P<name>[^/]+?)\.(?:so|a)$")),
    (
        "pkgconfig",
        re.compile(
            r"^(?:usr/(?:lib/" + _TRIPLET + r"|share/)|lib/" + _TRIPLET + r")pkgconfig/(?P<name>[^/]+)\.pc$"
        ),
    ),
    ("program", re.compile(r"^(?:usr/)?s?bin/(?P<name>[^/]+)$")),
)


class HintsError(PiwheelsError):
    """The Contents index could not be fetched or read."""


def contents_key(path: str) -> tuple[str, str] | None:
    """(kind, name) of a path of the Contents index that a build can miss, else None.

    ``usr/include/libxml2/libxml/parser.h`` -> ("header", "libxml2/libxml/parser.h"),
    ``usr/lib/x86_64-linux-gnu/libxml2.so`` -> ("library", "xml2"),
    ``usr/lib/x86_64-linux-gnu/pkgconfig/libffi.pc`` -> ("pkgconfig", "libffi"),
    ``usr/bin/curl-config`` -> ("program", "curl-config").
    """
    for kind, pattern in _PATHS:
        match = pattern.match(path)
        if match is not None:
            return kind, match["name"]
    return None


def parse_contents(lines: Iterable[bytes]) -> Iterator[tuple[str, str, str]]:
    """(kind, name, package) for every useful line of a Contents index ("PATH  section/pkg,...")."""
    for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\n")
        parts = line.rsplit(None, 1)
        if len(parts) != 2:
            continue
        key = contents_key(parts[0].strip())
        if key is None:
            continue
        for location in parts[1].split(","):
            yield key[0], key[1], location.rpartition("/")[2]


class ContentsIndex:
    """The useful part of one suite's Contents index for one architecture, cached on disk."""

    def __init__(
        self, cache_dir: Path, mirror: str, suite: str, arch: str, *, max_age_days: float, timeout: float
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9.+_-]+", suite) or not re.fullmatch(r"[a-z0-9]+", arch):
            raise HintsError(f"debian_suite {suite!r} / architecture {arch!r}: not a suite and architecture")
        self.mirror = mirror.rstrip("/") + "/"
        self.suite = suite
        self.arch = arch
        self.path = cache_dir / f"contents-{suite}-{arch}.sqlite"
        self.max_age = max_age_days * 86400
        self.timeout = timeout

    def urls(self) -> list[str]:
        base = f"{self.mirror}dists/{self.suite}/main/"
        return [f"{base}Contents-{self.arch}.gz", f"{base}Contents-all.gz"]

    def fresh(self) -> bool:
        """True when a cache of the right schema exists and is younger than ``max_age``."""
        try:
            age = time.time() - self.path.stat().st_mtime
        except OSError:
            return False
        return age < self.max_age and self._meta("schema") == SCHEMA_VERSION

    def _meta(self, key: str) -> str | None:
        try:
            with closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)) as conn:
                row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error:
            return None
        return None if row is None else str(row[0])

    def refresh(self) -> int:
        """Fetch the index again and replace the cache atomically; the number of rows kept.

        The arch-independent ``Contents-all.gz`` is optional (older releases fold it into each
        architecture's file); the architecture's own must be there.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as temp, closing(sqlite3.connect(temp)) as conn:
            conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            conn.execute(
                "CREATE TABLE paths (kind TEXT NOT NULL, name TEXT NOT NULL, package TEXT NOT NULL,"
                " PRIMARY KEY (kind, name, package)) WITHOUT ROWID"
            )
            for number, url in enumerate(self.urls()):
                self._load(conn, url, required=number == 0)
            conn.executemany(
                "INSERT INTO meta VALUES (?, ?)",
                [("schema", SCHEMA_VERSION), ("source", self.urls()[0]), ("fetched", str(time.time()))],
            )
            conn.commit()
            return int(conn.execute("SELECT count(*) FROM paths").fetchone()[0])

    def _load(self, conn: sqlite3.Connection, url: str, *, required: bool) -> None:
        try:
            with requests.get(url, stream=True, timeout=self.timeout) as response:
                if response.status_code == 404 and not required:
                    return
                if response.status_code != 200:
                    raise HintsError(f"{url}: HTTP {response.status_code}")
                response.raw.decode_content = False  # the file is gzip itself, not a gzip transfer
                with gzip.GzipFile(fileobj=response.raw) as gz:
                    rows = parse_contents(io.BufferedReader(gz, buffer_size=1 << 20))
                    conn.executemany("INSERT OR IGNORE INTO paths VALUES (?, ?, ?)", rows)
        except (requests.RequestException, OSError, EOFError) as exc:
            raise HintsError(f"{url}: cannot read the Contents index: {exc}") from None

    def lookup(self, kind: str, name: str) -> list[str]:
        """The packages that ship ``name`` of ``kind``; a program is also found under its
        alternatives' names (``mpicc`` -> ``mpicc.openmpi``)."""
        with closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)) as conn:
            query = "SELECT DISTINCT package FROM paths WHERE kind = ? AND name = ?"
            packages = [row[0] for row in conn.execute(query, (kind, name))]
            if not packages and kind == "program":
                escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                query = "SELECT DISTINCT package FROM paths WHERE kind = ? AND name LIKE ? ESCAPE '\\'"
                packages = [row[0] for row in conn.execute(query, (kind, escaped + ".%"))]
        # Development packages first: they bring the headers and the unversioned .so as well.
        return sorted(set(packages), key=lambda p: (not p.endswith("-dev"), p))[:MAX_PACKAGES]


class Hints:
    """The packages that fix a failure, from the Contents index of the configured mirror and suite.

    ``mirror`` and ``suite`` None: no hints. Lookups made while recording a build use the cache
    only (``fetch=False``, at any age): a build is never held up by a download of the index.
    """

    def __init__(
        self, cache_dir: Path, mirror: str | None, suite: str | None, *, max_age_days: float, timeout: float
    ) -> None:
        self.cache_dir = cache_dir
        self.mirror = mirror
        self.suite = suite
        self.max_age_days = max_age_days
        self.timeout = timeout
        self._lock = threading.Lock()
        self._refreshed: set[str] = set()
        # Told before an index is fetched (it takes half a minute): the CLI says so.
        self.on_fetch: Callable[[ContentsIndex], None] | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.mirror and self.suite)

    def index(self, platform_tag: str) -> ContentsIndex | None:
        """The Contents index of the builder platform's architecture (None: not a Debian one)."""
        arch = ARCHES.get(platform_tag)
        if not self.enabled or arch is None:
            return None
        assert self.mirror is not None and self.suite is not None
        return ContentsIndex(
            self.cache_dir,
            self.mirror,
            self.suite,
            arch,
            max_age_days=self.max_age_days,
            timeout=self.timeout,
        )

    def packages(
        self, reason: str, detail: str | None, platform_tag: str, *, fetch: bool
    ) -> list[str] | None:
        """The packages that ship what ``reason`` says is missing (``detail``) on ``platform_tag``;
        [] when none does, None when it cannot be told (no detail, no index, not fetched)."""
        kind = REASON_KINDS.get(reason)
        index = self.index(platform_tag)
        if kind is None or not detail or index is None:
            return None
        with self._lock:
            if fetch and not index.fresh() and index.path.name not in self._refreshed:
                self._refreshed.add(index.path.name)  # one attempt per run
                if self.on_fetch is not None:
                    self.on_fetch(index)
                try:
                    rows = index.refresh()
                except HintsError:
                    if not index.path.exists():
                        raise
                    log.warning("%s could not be refreshed: the older copy is used", index.path)
                else:
                    log.info("%s: %d paths kept from %s", index.path, rows, index.urls()[0])
            if not index.path.exists():  # never fetched: a lookup that may not fetch cannot tell
                return None
        name = detail.removeprefix("-l") if kind == "library" else detail
        return index.lookup(kind, name)
