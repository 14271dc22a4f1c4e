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
    "missing-dev-package": "pkgconfig",  # "install libcap development headers": libcap.pc, -lcap
    "needs-rust": "program",
    "rust-too-old": "program",
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
SCHEMA_VERSION = "2"
# Where several packages ship the same file, the one Debian makes the default (what its
# *-default-dev packages and the alternatives' highest priority pick): listed first.
DEBIAN_DEFAULTS = frozenset(
    {
        "libcurl4-openssl-dev",
        "libkrb5-dev",
        "libopenmpi-dev",
        "openmpi-bin",
        "libmariadb-dev",
        "libmariadb-dev-compat",
        "libssl-dev",
        "libjpeg62-turbo-dev",
        "libblas-dev",
        "liblapack-dev",
        "cargo",
        "rustc",
        "libhdf5-dev",
    }
)

_TRIPLET = r"(?:[a-z0-9_]+-linux-gnu[a-z0-9_]*/)?"
# Indexed by base name (what a log names): a header by its file name wherever it sits under
# usr/include, a library in any multiarch folder, a .pc file under any pkgconfig/ folder.
_PATHS = (
    ("header", re.compile(r"^usr/include/(?:.+/)?(?P<name>[^/]+\.(?:h|hh|hpp|hxx|H|inc))$")),
    ("library", re.compile(r"^(?:usr/)?lib/" + _TRIPLET + r"lib(?P<name>[^/]+?)\.(?:so|a)$")),
    ("pkgconfig", re.compile(r"^(?:usr/|lib/)(?:.+/)?pkgconfig/(?P<name>[^/]+)\.pc$")),
    ("program", re.compile(r"^(?:usr/)?s?bin/(?P<name>[^/]+)$")),
)
_INCLUDE = re.compile(r"^usr/include/" + _TRIPLET)


class HintsError(PiwheelsError):
    """The Contents index could not be fetched or read."""


def contents_key(path: str) -> tuple[str, str] | None:
    """(kind, base name) of a path of the Contents index that a build can miss, else None.

    ``usr/include/libxml2/libxml/parser.h`` -> ("header", "parser.h"),
    ``usr/lib/x86_64-linux-gnu/libxml2.so`` -> ("library", "xml2"),
    ``usr/lib/x86_64-linux-gnu/pkgconfig/libffi.pc`` -> ("pkgconfig", "libffi"),
    ``usr/bin/curl-config`` -> ("program", "curl-config").
    """
    for kind, pattern in _PATHS:
        match = pattern.match(path)
        if match is not None:
            return kind, match["name"]
    return None


def parse_contents(lines: Iterable[bytes]) -> Iterator[tuple[str, str, str, str]]:
    """(kind, name, path, package) for every useful line of a Contents index ("PATH  section/pkg,...")."""
    for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\n")
        parts = line.rsplit(None, 1)
        if len(parts) != 2:
            continue
        path = parts[0].strip()
        key = contents_key(path)
        if key is None:
            continue
        for location in parts[1].split(","):
            yield key[0], key[1], path, location.rpartition("/")[2]


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
                "CREATE TABLE paths (kind TEXT NOT NULL, name TEXT NOT NULL, path TEXT NOT NULL,"
                " package TEXT NOT NULL, PRIMARY KEY (kind, name, path, package)) WITHOUT ROWID"
            )
            for number, url in enumerate(self.urls()):
                self._load(conn, url, required=number == 0)
            conn.execute("CREATE INDEX by_package ON paths (package, kind)")
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
                    conn.executemany("INSERT OR IGNORE INTO paths VALUES (?, ?, ?, ?)", rows)
        except (requests.RequestException, OSError, EOFError) as exc:
            raise HintsError(f"{url}: cannot read the Contents index: {exc}") from None

    def lookup(self, kind: str, name: str, log: str = "") -> list[dict[str, str]]:
        """The packages that ship ``name`` of ``kind``, best first, each with why it is listed
        ({"package", "why"}). A header is found in any folder of usr/include (``cairo.h`` in
        ``cairo/``), a program also under its alternatives' names (``mpicc`` -> ``mpicc.openmpi``);
        ``log`` ranks first the candidates whose folder (``-I``), .pc file or library it names."""
        base = name.rpartition("/")[2]
        with closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)) as conn:
            query = "SELECT path, package FROM paths WHERE kind = ? AND name = ?"
            rows = list(conn.execute(query, (kind, base)))
            if not rows and kind == "program" and not re.search(r"[*?\[]", name):
                query = "SELECT path, package FROM paths WHERE kind = ? AND name GLOB ?"
                rows = list(conn.execute(query, (kind, name + ".*")))  # GLOB: case matters
            ranked: dict[str, tuple[tuple[object, ...], str]] = {}
            for path, package in rows:
                rank = _rank(conn, kind, name, path, package, log)
                if rank is not None and (package not in ranked or rank[0] < ranked[package][0]):
                    ranked[package] = rank
        best = sorted(ranked.items(), key=lambda item: (item[1][0], item[0]))[:MAX_PACKAGES]
        return [{"package": package, "why": why} for package, (_key, why) in best]


def _mentioned(conn: sqlite3.Connection, package: str, log: str) -> str | None:
    """What of ``package`` the log names: one of its .pc files or libraries (``-lfoo``)."""
    if not log:
        return None
    query = "SELECT kind, name FROM paths WHERE package = ? AND kind IN ('pkgconfig', 'library')"
    for kind, name in conn.execute(query, (package,)):
        if kind == "pkgconfig" and re.search(rf"(?<![\w.+-]){re.escape(name)}(?:\.pc)?(?![\w+-])", log):
            return f"the log names its {name}.pc"
        if kind == "library" and re.search(rf"-l{re.escape(name)}(?![\w+-])", log):
            return f"the log links -l{name}"
    return None


def _rank(
    conn: sqlite3.Connection, kind: str, name: str, path: str, package: str, log: str
) -> tuple[tuple[object, ...], str] | None:
    """(sort key, why) of one candidate; None when its path is not what was asked for."""
    why = [f"ships /{path}"]
    literal, depth, named, mention = True, 0, True, None
    if kind == "header":
        relative = _INCLUDE.sub("", path)
        if relative != name:
            if not relative.endswith("/" + name):
                return None  # same file name, another path than the #include asked for
            folder = relative[: -len(name) - 1]
            literal, depth = False, folder.count("/") + 1
            # a folder named after the header (sasl/sasl.h, cairo/cairo.h) before the others
            named = re.sub(r"[-\d.]+$", "", folder.rpartition("/")[2]) == name.partition(".")[0]
            why[0] += f" (in the folder {folder}/ of /usr/include)"
            if f"/usr/include/{folder}" in log:
                mention = f"the log passes -I/usr/include/{folder}"
    mention = mention or _mentioned(conn, package, log)
    if mention:
        why.append(mention)
    dev = package.endswith("-dev")
    if dev and kind != "program":
        why.append("a -dev package")
    default = package in DEBIAN_DEFAULTS
    if default:
        why.append("Debian's default among the alternatives")
    debug = package.endswith(("-dbg", "-dbgsym"))
    return (mention is None, not literal, depth, debug, not dev, not default, not named), "; ".join(why)


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
        found = self.suggest(reason, detail, platform_tag, fetch=fetch)
        return None if found is None else [s["package"] for s in found]

    def suggest(
        self, reason: str, detail: str | None, platform_tag: str, *, fetch: bool, text: str = ""
    ) -> list[dict[str, str]] | None:
        """Like ``packages``, each with why it is listed ({"package", "why"}), ranked by what
        ``text`` (the build's log) names."""
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
        if reason in ("needs-rust", "rust-too-old"):
            return _rust(index.lookup(kind, "cargo", text), too_old=reason == "rust-too-old")
        found = index.lookup(kind, name, text)
        if not found and reason == "missing-dev-package":  # no .pc file: its -l library
            found = index.lookup("library", name.removeprefix("lib"), text)
        return found


def _rust(found: list[dict[str, str]], *, too_old: bool) -> list[dict[str, str]]:
    """The packages of cargo; for a Rust too old, Debian's newer builds (``cargo-web``) first,
    since the plain ``cargo`` is the one that is too old, and rustup named for any newer one."""
    if not too_old:
        return found
    newer = [s for s in found if s["package"] != "cargo"]
    for suggestion in newer:
        suggestion["why"] += (
            "; a newer Rust than Debian's cargo (the one that is too old); if still older than"
            " asked, rustup (rustup.rs) installs any version"
        )
    return newer
