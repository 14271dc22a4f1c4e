"""Time the controller's operations on a synthetic farm of PyPI's size (issue 10).

    .venv/bin/python bench/scale.py [--projects N ...] [--db sqlite|postgresql ...]
                                    [--postgres-url URL] [--keep DIR] [--quick]

For each size (default: 50,000 and 500,000 projects, i.e. 3.0M versions, 4.08M builds,
2.7M wheels, 4 ABIs at the larger) and each database, ``farm.make_farm`` builds a caught-up
farm in bulk SQL, then each step runs in a process of its own, so that its wall time, CPU
time and peak memory (the process's maximum resident set) are its own:

  status, queue, run    the real commands (``piwheels-ctl``), nothing to build; beside them
                        ``piwheels-ctl --help``, what starting the CLI costs
  ... (in process)      the same work without starting Python: the database's part
  claim when empty      ``claim_next`` for the builder's 4 ABIs, nothing pending
  new versions          50 new versions of watched projects, as a sync records them
  claim                 ``claim_next`` one at a time (figure: the median of 20)
  record                ``record_failure`` of a claimed build (median of 10)
  hand back             a claimed build handed back by a failing builder (median of 10)
  publish, first        ``publish`` of the farm as built: the root index written whole
  sync                  one round against a local upstream (``upstream.Upstream``) where 100
                        watched projects changed: with serials in its JSON root, and (not with
                        --quick) without them: an HTML root, every page asked for with its ETag
  publish the synced    ``publish`` of the 100 projects the sync changed
  publish, one wheel    ``publish`` after one new wheel of a listed project
  publish, new project  ``publish`` after the first wheel of a new project (the root patched)
  publish --full        every page again, www/ in place (not with --quick)
  add an ABI            a fifth ABI (coverage by our wheels and the pending pairs)

PostgreSQL is a throwaway cluster started here (as tests/conftest.py does) unless
``--postgres-url`` names a server (an empty database of it). ``--keep DIR`` (one size,
SQLite) leaves DIR as a data dir the CLI uses: ``PIWHEELS_DATA_DIR=DIR
PIWHEELS_LOCAL_BUILDER=false piwheels-ctl status``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from farm import ABIS, add_wheel, make_farm
from sqlalchemy import select
from upstream import Upstream

from piwheels_ctl.builds.record import record_failure
from piwheels_ctl.builds.runner import Runner
from piwheels_ctl.catalog.projects import skipped
from piwheels_ctl.config import load_settings
from piwheels_ctl.db.engine import Database, upgrade
from piwheels_ctl.db.models import Project, Version, utcnow
from piwheels_ctl.failures.classify import Failure
from piwheels_ctl.farm.executors import open_executors
from piwheels_ctl.farm.registry import ensure_abi
from piwheels_ctl.queue.claims import claim_next, pending, waiting

BIN = Path(sys.executable).parent
LEASE = timedelta(hours=1)
ABI_IDS = list(range(1, len(ABIS) + 1))
CHANGED = 100  # projects changed upstream before a sync round


@dataclass(frozen=True)
class Farm:
    """Where a farm lives: its database and the data dir the CLI is given."""

    url: str
    data_dir: Path
    projects: int = 0
    upstream: Upstream | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIWHEELS_")}
        env.update(PIWHEELS_DATA_DIR=str(self.data_dir), PIWHEELS_LOCAL_BUILDER="false")
        env["PIWHEELS_DEBIAN_MIRROR"] = ""
        if self.upstream is not None:
            env["PIWHEELS_UPSTREAM"] = self.upstream.url
        if not self.url.startswith("sqlite"):
            env["PIWHEELS_DATABASE_URL"] = self.url
        return env


@dataclass(frozen=True)
class Figure:
    """One step's cost: wall seconds (of one operation where the step repeats it), CPU
    seconds and peak resident memory of its process."""

    seconds: float
    cpu: float
    peak_mb: float


def _measured(run: Callable[[], float | None] | Callable[[], None]) -> Figure:
    """Run ``run`` in a child process; its figure (``run`` may return its own seconds)."""
    read, write = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: its figure goes up the pipe
        os.close(read)
        code = 0
        try:
            seconds = run()
            os.write(write, repr(seconds).encode())
        except BaseException as exc:
            print(f"step failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        answer = pipe.read()
    _pid, status, usage = os.wait4(pid, 0)
    wall = time.monotonic() - start
    if status != 0 or not answer:
        raise SystemExit("a step failed (see above)")
    own = None if answer == "None" else float(answer)
    return Figure(own if own is not None else wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def _command(farm: Farm, *args: str) -> Callable[[], float | None]:
    def run() -> None:
        subprocess.run([BIN / "piwheels-ctl", *args], env=farm.env(), check=True, stdout=subprocess.DEVNULL)

    return run


def _status_queries(farm: Farm) -> float | None:
    from piwheels_ctl.cli.status import _status  # what `status` asks the database

    with Database(farm.url).reader() as session:
        start = time.monotonic()
        _status(session)
        return time.monotonic() - start


def _queue_queries(farm: Farm) -> float | None:
    with Database(farm.url).reader() as session:
        start = time.monotonic()
        list(pending(session, limit=101))
        skipped(session)
        waiting(session, limit=100)
        return time.monotonic() - start


def _run_nothing(farm: Farm) -> float | None:
    db = Database(farm.url)
    settings = load_settings(None, farm.env())
    start = time.monotonic()
    report = Runner(db, settings, open_executors(db, settings)).run()
    assert report.built + report.failed == 0, "something was built"
    return time.monotonic() - start


def _claim_empty(farm: Farm) -> float | None:
    db = Database(farm.url)
    with db.session() as session:
        assert claim_next(session, ABI_IDS, 1, LEASE) is None, "the farm has work pending"
    return None


def _new_versions(farm: Farm) -> float | None:
    db = Database(farm.url)
    with db.session() as session:
        projects = session.scalars(select(Project).where(Project.watched).order_by(Project.id).limit(50))
        for project in projects:
            session.add(
                Version(
                    project_id=project.id,
                    version="99.0",
                    release_time=utcnow(),
                    sdist_filename=f"{project.name}-99.0.tar.gz",
                    sdist_url=f"https://files.example/{project.name}-99.0.tar.gz",
                    sdist_sha256="0" * 64,
                )
            )
    return None


def _claims(farm: Farm) -> float | None:
    db = Database(farm.url)
    times = []
    for _ in range(20):
        start = time.monotonic()
        with db.session() as session:
            claimed = claim_next(session, ABI_IDS, 1, LEASE)
        times.append(time.monotonic() - start)
        assert claimed is not None, "nothing to claim"
    return statistics.median(times)


def _building(db: Database) -> list[int]:
    from piwheels_ctl.db.models import Build, BuildStatus

    with db.reader() as session:
        return list(session.scalars(select(Build.id).where(Build.status == BuildStatus.BUILDING)))


def _records(farm: Farm) -> float | None:
    db = Database(farm.url)
    times = []
    logs = farm.data_dir / "logs"
    for build_id in _building(db)[:10]:
        start = time.monotonic()
        assert record_failure(
            db, logs, build_id, Failure("missing-header", "foo.h", "foo.h: no such file"), 1.0, None
        )
        times.append(time.monotonic() - start)
    return statistics.median(times)


def _hand_backs(farm: Farm) -> float | None:
    db = Database(farm.url)
    runner = Runner(db, load_settings(None, farm.env()), [])
    times = []
    for build_id in _building(db)[:10]:
        start = time.monotonic()
        runner._hand_back([build_id])  # what a failing builder's job goes through
        times.append(time.monotonic() - start)
    return statistics.median(times)


def _add_abi(farm: Farm) -> float | None:
    db = Database(farm.url)
    with db.session() as session:
        ensure_abi(session, {"python_tag": "cp312", "abi_tag": "cp312", "platform_tag": "linux_armv7l"})
    return None


def _sync(farm: Farm, *, serials: bool, round_: int) -> Callable[[], float | None]:
    """Change CHANGED watched projects upstream (here, in the process that serves them), then
    a child runs ``sync``, which must find exactly those."""
    assert farm.upstream is not None
    farm.upstream.serials = serials
    watched = [i for i in range(1, farm.projects + 1) if i % 20][CHANGED * round_ : CHANGED * (round_ + 1)]
    farm.upstream.bump(watched)

    def run() -> None:
        done = subprocess.run(
            [BIN / "piwheels-ctl", "sync", "--json"],
            env=farm.env(),
            check=True,
            capture_output=True,
            text=True,
        )
        report = json.loads(done.stdout)
        found = (report["changed"], report["new_versions"])
        assert found == (CHANGED, CHANGED), f"sync changed {found}, not {CHANGED}: {report}"

    return run


def _publish_after_wheel(farm: Farm, *, new_project: bool) -> Callable[[], float | None]:
    """Record one wheel as the recorder would (the project marked dirty), of a new version of a
    listed project whose pages are there (the first the sync changed: the publish after it
    wrote them) or of a new project; then a child runs ``publish``."""
    db = Database(farm.url)
    add_wheel(db.engine, farm.projects + 1 if new_project else 1, new_project=new_project)
    db.dispose()
    return _command(farm, "publish")


SYNC_SERIALS = f"sync, {CHANGED} changed: serials in the JSON root"
SYNC_CONDITIONAL = f"sync, {CHANGED} changed: HTML root, conditional requests"
PUBLISH_FULL = "publish --full, www/ in place"
SLOW = {SYNC_CONDITIONAL, PUBLISH_FULL}  # what --quick leaves out

# (name, what it runs): in this order, each on the farm the steps before it left.
STEPS: list[tuple[str, Callable[[Farm], Callable[[], float | None]]]] = [
    ("CLI start (--help): the floor of the three below", lambda farm: _command(farm, "--help")),
    ("status", lambda farm: _command(farm, "status")),
    ("queue (first 100)", lambda farm: _command(farm, "queue")),
    ("run, nothing to build", lambda farm: _command(farm, "run")),
    ("status: its queries (in process)", lambda farm: lambda: _status_queries(farm)),
    ("queue: its queries (in process)", lambda farm: lambda: _queue_queries(farm)),
    ("run, nothing to build (in process)", lambda farm: lambda: _run_nothing(farm)),
    ("claim, nothing pending", lambda farm: lambda: _claim_empty(farm)),
    ("50 new versions", lambda farm: lambda: _new_versions(farm)),
    ("claim one job", lambda farm: lambda: _claims(farm)),
    ("record one build", lambda farm: lambda: _records(farm)),
    ("hand back one job", lambda farm: lambda: _hand_backs(farm)),
    ("status, with jobs pending", lambda farm: _command(farm, "status")),
    ("publish, first (the root index whole)", lambda farm: _command(farm, "publish")),
    (SYNC_SERIALS, lambda farm: _sync(farm, serials=True, round_=0)),
    (SYNC_CONDITIONAL, lambda farm: _sync(farm, serials=False, round_=1)),
    ("publish the synced projects", lambda farm: _command(farm, "publish")),
    ("publish after one new wheel", lambda farm: _publish_after_wheel(farm, new_project=False)),
    ("publish after a new project's first wheel", lambda farm: _publish_after_wheel(farm, new_project=True)),
    (PUBLISH_FULL, lambda farm: _command(farm, "publish", "--full")),
    ("add an ABI", lambda farm: lambda: _add_abi(farm)),
]


@contextlib.contextmanager
def postgres_cluster() -> Iterator[str]:
    """A throwaway PostgreSQL server on a free port of 127.0.0.1: its base URL."""
    bindir = next(Path("/usr/lib/postgresql").glob("*/bin"))
    root = Path(tempfile.mkdtemp(prefix="scale-postgres-"))
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses root: Debian's postgres user runs it
        shutil.chown(root, "postgres", "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = root / "data"

    def quiet(command: list[str | Path]) -> None:
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)

    quiet([*as_postgres, bindir / "initdb", "-D", data, "-U", "postgres", "-A", "trust"])
    pg_ctl: list[str | Path] = [*as_postgres, bindir / "pg_ctl", "-D", data]
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c shared_buffers=256MB"
    quiet([*pg_ctl, "-o", options, "-w", "-l", root / "log", "start"])
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/"
    finally:
        quiet([*pg_ctl, "-m", "immediate", "stop"])
        shutil.rmtree(root, ignore_errors=True)


def _fresh_database(base: str, name: str) -> str:
    import psycopg

    admin = base.replace("postgresql+psycopg://", "postgresql://", 1) + "postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    return base + name


def bench(farm: Farm, projects: int, *, quick: bool) -> list[tuple[str, Figure]]:
    """Build the farm, then run every step on it (but SLOW ones with ``quick``); the figures
    in order."""
    db = Database(farm.url)
    upgrade(db.engine)
    db.dispose()

    def build() -> None:
        size = make_farm(Database(farm.url).engine, projects)
        print(f"  {size}", flush=True)

    figures = [("build the farm", _measured(build))]
    farm = dataclasses.replace(farm, projects=projects, upstream=Upstream(projects))
    try:
        for name, step in STEPS:
            if quick and name in SLOW:
                continue
            figures.append((name, _measured(step(farm))))
            print(f"  {name}: {figures[-1][1]}", flush=True)
    finally:
        assert farm.upstream is not None
        farm.upstream.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--projects", type=int, action="append", help="farm size (repeatable)")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], action="append", help="(repeatable)")
    parser.add_argument("--postgres-url", help="a PostgreSQL server to use instead of a throwaway one")
    parser.add_argument("--keep", type=Path, help="leave the (SQLite, one size) farm in this data dir")
    parser.add_argument(
        "--quick", action="store_true", help="leave out publish --full and the sync without serials"
    )
    args = parser.parse_args()
    sizes = args.projects or [50_000, 500_000]
    databases = args.db or ["sqlite", "postgresql"]
    if args.keep and (len(sizes) > 1 or databases != ["sqlite"]):
        parser.error("--keep takes one --projects and --db sqlite")
    results: dict[tuple[str, int], list[tuple[str, Figure]]] = {}
    with contextlib.ExitStack() as stack:
        base = None
        if "postgresql" in databases:
            base = args.postgres_url or stack.enter_context(postgres_cluster())
        for database in databases:
            for projects in sizes:
                print(f"{database}, {projects:,} projects", flush=True)
                data_dir = args.keep or Path(
                    stack.enter_context(tempfile.TemporaryDirectory(prefix="scale-"))
                )
                data_dir.mkdir(parents=True, exist_ok=True)
                if database == "sqlite":
                    (data_dir / "piwheels.db").unlink(missing_ok=True)
                    url = f"sqlite:///{data_dir.resolve() / 'piwheels.db'}"
                else:
                    assert base is not None
                    url = _fresh_database(base, f"scale_{projects}")
                results[database, projects] = bench(Farm(url, data_dir), projects, quick=args.quick)
    _print_table(results)


def _print_table(results: dict[tuple[str, int], list[tuple[str, Figure]]]) -> None:
    columns = list(results)
    print("\n| operation | " + " | ".join(f"{db}, {n:,} projects" for db, n in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for i, (name, _figure) in enumerate(next(iter(results.values()))):
        cells = []
        for column in columns:
            figure = results[column][i][1]
            wall = f"{figure.seconds * 1000:.1f} ms" if figure.seconds < 1 else f"{figure.seconds:.2f} s"
            cells.append(f"{wall} (CPU {figure.cpu:.2f} s, {figure.peak_mb:.0f} MB)")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
