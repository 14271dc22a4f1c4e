"""Sync and publish on a farm of PyPI's size: what one sync round, a publish after one new wheel
and a full publish cost, in time and peak memory.

    .venv/bin/python bench/scale_sync_publish.py --projects 50000 [--database-url URL] [--keep DIR]

Makes a synthetic farm (every project watched, 6 versions with an sdist, 5 wheels a project,
as published: its serial, ETag and root listing recorded), publishes it whole once (timed: the
first ``publish --full``), then times, each command a subprocess of its own whose peak RSS is
read with ``getrusage(RUSAGE_CHILDREN)`` in a wrapper process:

* one ``sync`` round against a local upstream (a thread of this process on loopback) where 100
  projects changed, side by side: the upstream's JSON root with serials, and the same upstream
  without serials (an HTML root; every page asked for with its ETag, 304 when unchanged);
* ``publish`` after one new wheel of a listed project, and after the first wheel of a new
  project (the root patched);
* ``publish --full`` again, with www/ in place.

Prints a Markdown table; figures in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sqlalchemy import insert, text, update

from piwheels_ctl import queue
from piwheels_ctl.database import Database
from piwheels_ctl.models import Abi, File, Project, Version

ROOT = Path(__file__).resolve().parent.parent
CLI = [str(Path(sys.executable).parent / "piwheels-ctl")]
VERSIONS = 6  # per project
WHEELS = 5  # per project, one each for its first versions
CHANGED = 100  # projects changed upstream before a sync round
BATCH = 20_000  # rows a bulk INSERT
# Runs the command given, then prints its peak RSS (KiB) as the last line of stderr.
MEASURE = """\
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:]).returncode
sys.stderr.write(f"\\nMAXRSS {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\\n")
sys.exit(code)
"""


def name(i: int) -> str:
    return f"proj-{i:06d}"


def display(i: int) -> str:
    return f"Proj_{i:06d}"


def metadata(i: int, version: str) -> str:
    return f"Metadata-Version: 2.1\nName: {display(i)}\nVersion: {version}\nSummary: project {i}\n"


def make_farm(database_url: str, env: dict[str, str], projects: int) -> None:
    """A farm of ``projects`` watched projects, as published and synced.

    To be replaced by bench/scale.py's generator (the QUEUE/INDEX half of issue 10) once that is
    merged: this one only makes what sync and publish read (projects, versions, files, 2 ABIs).
    """
    subprocess.run([*CLI, "init"], env=env, check=True, capture_output=True)
    db = Database(database_url)
    released = datetime(2024, 1, 1, tzinfo=timezone.utc)
    try:
        with db.engine.begin() as conn:
            conn.execute(
                insert(Abi),
                [
                    {
                        "tag": f"{t}-{t}-linux_armv7l",
                        "python_tag": t,
                        "abi_tag": t,
                        "platform_tag": "linux_armv7l",
                    }
                    for t in ("cp311", "cp313")
                ],
            )
        for start in range(0, projects, BATCH // VERSIONS):
            chunk = range(start, min(projects, start + BATCH // VERSIONS))
            with db.engine.begin() as conn:
                conn.execute(
                    insert(Project),
                    [
                        {"id": i + 1, "name": name(i), "display_name": display(i), "watched": True,
                         "dirty": False, "dirty_generation": 0, "serial": 1, "etag": '"1"',
                         "listed_name": display(i)}
                        for i in chunk
                    ],
                )  # fmt: skip
                conn.execute(
                    insert(Version),
                    [
                        {"id": i * VERSIONS + v + 1, "project_id": i + 1, "version": f"1.{v}",
                         "release_time": released + timedelta(minutes=i + v), "yanked": False,
                         "sdist_filename": f"{display(i)}-1.{v}.tar.gz",
                         "sdist_url": f"http://127.0.0.1/files/{display(i)}-1.{v}.tar.gz",
                         "sdist_sha256": hashlib.sha256(f"{i}-{v}".encode()).hexdigest(), "priority": 0}
                        for i in chunk
                        for v in range(VERSIONS)
                    ],
                )  # fmt: skip
                conn.execute(
                    insert(File),
                    [
                        {"version_id": i * VERSIONS + v + 1,
                         "filename": f"{display(i)}-1.{v}-py3-none-any.whl", "size": 10_000 + i,
                         "sha256": hashlib.sha256(f"w{i}-{v}".encode()).hexdigest(), "python_tag": "py3",
                         "abi_tag": "none", "platform_tag": "any",
                         "metadata_sha256": hashlib.sha256(metadata(i, f"1.{v}").encode()).hexdigest(),
                         "core_metadata": metadata(i, f"1.{v}"), "uploaded_at": released, "mirrored": False}
                        for i in chunk
                        for v in range(WHEELS)
                    ],
                )  # fmt: skip
        if db.engine.dialect.name == "postgresql":
            with db.engine.begin() as conn:
                for table in ("projects", "versions", "files", "abis"):
                    conn.execute(text(f"SELECT setval('{table}_id_seq', (SELECT max(id) FROM {table}))"))
                conn.execute(text("ANALYZE"))
    finally:
        db.dispose()


class Upstream:
    """A PEP 691 index of the farm's projects on loopback; ``bump`` changes projects (a new
    version, a new serial and ETag); ``serials`` off: an HTML root and no serials."""

    def __init__(self, projects: int) -> None:
        self.projects = projects
        self.serials = True
        self.serial = [1] * projects
        self._roots: dict[tuple[bool, bytes], bytes] = {}
        self.pages = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, upstream=self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/simple/"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def bump(self, changed: range) -> None:
        for i in changed:
            self.serial[i] += 1
        self._roots.clear()

    def root(self) -> tuple[str, bytes]:
        key = (self.serials, b"")
        if key not in self._roots:
            if self.serials:
                entries = ",".join(
                    f'{{"name":"{display(i)}","_last-serial":{s}}}' for i, s in enumerate(self.serial)
                )
                self._roots[key] = f'{{"meta":{{"api-version":"1.1"}},"projects":[{entries}]}}'.encode()
            else:
                links = "".join(f'<a href="{name(i)}/">{display(i)}</a>\n' for i in range(self.projects))
                self._roots[key] = f"<!DOCTYPE html><html><body>\n{links}</body></html>\n".encode()
        content_type = "application/vnd.pypi.simple.v1+json" if self.serials else "text/html"
        return content_type, self._roots[key]

    def page(self, i: int) -> bytes:
        versions = [f"1.{v}" for v in range(VERSIONS)] + [f"2.{s}" for s in range(2, self.serial[i] + 1)]
        files = [
            {
                "filename": f"{display(i)}-{v}.tar.gz",
                "url": f"/files/{display(i)}-{v}.tar.gz",
                "hashes": {"sha256": hashlib.sha256(f"{i}-{v}".encode()).hexdigest()},
                "upload-time": "2024-01-01T00:00:00Z",
            }
            for v in versions
        ]
        return json.dumps({"meta": {"api-version": "1.1"}, "name": display(i), "files": files}).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # kept-alive connections, as a real index

    def __init__(self, *args: Any, upstream: Upstream, **kwargs: Any) -> None:
        self.upstream = upstream
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        up = self.upstream
        if self.path == "/simple/":
            content_type, body = up.root()
            return self._send(200, content_type, body)
        parts = self.path.split("/")
        i = int(parts[2].removeprefix("proj-")) if len(parts) == 4 and parts[2].startswith("proj-") else -1
        if not 0 <= i < up.projects:
            return self._send(404, "text/plain", b"no such project")
        up.pages += 1
        etag = f'"{up.serial[i]}"'
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return self._send(200, "application/vnd.pypi.simple.v1+json", up.page(i), etag)

    def _send(self, status: int, content_type: str, body: bytes, etag: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if etag:
            self.send_header("ETag", etag)
        self.end_headers()
        with contextlib.suppress(BrokenPipeError):  # a client that wants no HTML root hangs up
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


def measure(args: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Run the CLI with ``args``: (seconds, peak RSS in MiB, stdout)."""
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, *CLI, *args], env=env, capture_output=True, text=True, check=False
    )
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"piwheels-ctl {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    maxrss = int(proc.stderr.rsplit("MAXRSS ", 1)[1].split()[0])
    return seconds, maxrss // 1024, proc.stdout


def new_wheel(database_url: str, project: int, *, new_project: bool = False) -> None:
    """Record one wheel as the recorder would (the project marked dirty), of a new version of
    ``project``, or of a new project of that number."""
    db = Database(database_url)
    try:
        with db.engine.begin() as conn:
            if new_project:
                project_id = conn.execute(
                    insert(Project)
                    .values(name=name(project), display_name=display(project), watched=True, dirty=True)
                    .returning(Project.id)
                ).scalar_one()
            else:
                project_id = project + 1
                conn.execute(
                    update(Project)
                    .where(Project.id == project_id)
                    .values(dirty=True, dirty_generation=Project.dirty_generation + 1)
                )
            version_id = conn.execute(
                insert(Version)
                .values(project_id=project_id, version="9.0", yanked=False, priority=0)
                .returning(Version.id)
            ).scalar_one()
            conn.execute(
                insert(File).values(
                    version_id=version_id, filename=f"{display(project)}-9.0-py3-none-any.whl", size=1,
                    sha256="0" * 64, python_tag="py3", abi_tag="none", platform_tag="any",
                    metadata_sha256=hashlib.sha256(metadata(project, "9.0").encode()).hexdigest(),
                    core_metadata=metadata(project, "9.0"), mirrored=False,
                )
            )  # fmt: skip
    finally:
        db.dispose()


def queue_count(database_url: str) -> float:
    """Seconds the statistics take to count the pending pairs (in this process)."""
    db = Database(database_url)
    try:
        with db.reader() as session:
            start = time.monotonic()
            queue.count(session)
            return time.monotonic() - start
    finally:
        db.dispose()


def rows(table: list[tuple[str, float, int, str]]) -> Iterator[str]:
    yield "| operation | time | peak RSS | notes |"
    yield "|---|---|---|---|"
    for what, seconds, rss, notes in table:
        yield f"| {what} | {seconds:.2f} s | {f'{rss} MiB' if rss >= 0 else 'n/a'} | {notes} |"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--projects", type=int, default=50_000)
    parser.add_argument(
        "--database-url", help="an empty PostgreSQL database (default: SQLite in the data dir)"
    )
    parser.add_argument("--keep", type=Path, help="make the farm in this data dir and leave it there")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="leave out both publish --full and the sync without serials (for the biggest farms)",
    )
    options = parser.parse_args()
    data = options.keep or Path(tempfile.mkdtemp(prefix="piwheels-scale-"))
    data.mkdir(parents=True, exist_ok=True)
    database_url = options.database_url or f"sqlite:///{data.resolve() / 'piwheels.db'}"
    n = options.projects
    env = {
        **os.environ,
        "PIWHEELS_DATA_DIR": str(data),
        "PIWHEELS_DATABASE_URL": database_url,
        "PIWHEELS_LOCAL_BUILDER": "false",
        "PIWHEELS_DEBIAN_MIRROR": "",
    }
    print(f"{platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    start = time.monotonic()
    make_farm(database_url, env, n)
    made = time.monotonic() - start
    print(f"farm of {n} projects, {n * VERSIONS} versions, {n * WHEELS} wheels made in {made:.0f} s")
    table: list[tuple[str, float, int, str]] = []
    if options.quick:  # the root and the site's pages, not every project's pages
        measure(["publish"], env)
    else:
        seconds, rss, out = measure(["publish", "--full"], env)
        table.append(("`publish --full`, empty www/", seconds, rss, out.strip().replace("\n", " ")))
    upstream = Upstream(n)
    env["PIWHEELS_UPSTREAM"] = upstream.url
    rounds = ((True, range(0, CHANGED)), (False, range(CHANGED, 2 * CHANGED)))
    for serials, changed in rounds[:1] if options.quick else rounds:
        upstream.serials = serials
        upstream.bump(changed)
        upstream.pages = 0
        seconds, rss, out = measure(["sync", "--json"], env)
        report = json.loads(out)
        assert (report["changed"], report["new_versions"]) == (CHANGED, CHANGED), report
        how = "serials in the JSON root" if serials else "HTML root, no serials: conditional requests"
        notes = f"{upstream.pages} page requests, {report['fetched']} pages fetched"
        table.append((f"`sync`, {CHANGED} of {n} changed, {how}", seconds, rss, notes))
    # The sync marked the changed projects dirty (new versions show on their pages): publish
    # them first, so that the next figure is for one wheel alone.
    measure(["publish"], env)
    new_wheel(database_url, n // 2)
    seconds, rss, out = measure(["publish"], env)
    table.append(("`publish` after one new wheel", seconds, rss, out.strip()))
    seconds = queue_count(database_url)
    table.append(("of which: the front page's count of the queue (`queue.count`)", seconds, -1, ""))
    seconds, rss, _out = measure(["--version"], env)
    table.append(("of which: starting the CLI (`--version`)", seconds, rss, ""))
    new_wheel(database_url, n, new_project=True)
    seconds, rss, out = measure(["publish"], env)
    table.append(("`publish` after the first wheel of a new project", seconds, rss, out.strip()))
    if not options.quick:
        seconds, rss, out = measure(["publish", "--full"], env)
        table.append(("`publish --full`, www/ in place", seconds, rss, out.strip().replace("\n", " ")))
    print("\n".join(rows(table)))
    if options.keep is None:
        print(f"(data dir {data} left for inspection; remove it when done)")


if __name__ == "__main__":
    main()
