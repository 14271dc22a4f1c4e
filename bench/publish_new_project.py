"""`publish` after a new project's first wheel on a big farm: a git ref against this tree.

    .venv/bin/python bench/scale.py --projects 500000 --db sqlite --quick --keep /var/tmp/farm500k
    .venv/bin/python bench/publish_new_project.py --data /var/tmp/farm500k --before REF [--runs 5] [--full]

Both trees run with this virtualenv, interleaved, on the farm ``scale.py --keep`` left: the
``--before`` ref's ``piwheels_ctl`` exported as ``startup.py`` does. Before each run a new
project with one wheel is recorded (``farm.add_wheel``), its name starting with "p", the
largest list of projects by first character; a first, unmeasured run of each tree writes
whatever that tree writes once. With ``--full``, each run is ``publish --full`` (www/ in place)
after that new project. Reports per tree the median wall time, CPU time and the peak
memory (maximum resident set) of the ``publish`` process. The farm keeps the projects added.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from farm import SPREAD, add_wheel
from sqlalchemy import func, select
from startup import ROOT, RUNNER, export

from piwheels_ctl.db.engine import Database
from piwheels_ctl.db.models import Project


def publish(tree: Path, env: dict[str, str], *options: str) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak MB of one ``publish`` with ``tree``'s code."""
    start = time.perf_counter()
    command = [sys.executable, "-c", RUNNER, str(tree), "publish", *options]
    quiet = subprocess.DEVNULL
    proc = subprocess.Popen(command, env=env, cwd=env["PIWHEELS_DATA_DIR"], stdout=quiet, stderr=quiet)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"publish with {tree} exited {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the data folder scale.py --keep left")
    parser.add_argument("--before", default="main", help="git ref to compare with (default: main)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--full", action="store_true", help="time publish --full instead")
    options = parser.parse_args()
    data = options.data.resolve()
    if not (data / "piwheels.db").is_file():
        parser.error(f"--data {data}: no piwheels.db (make one with scale.py --keep)")
    db = Database(f"sqlite:///{data / 'piwheels.db'}")
    with db.reader() as session:
        last = session.scalar(select(func.max(Project.id))) or 0
    # New project numbers after every project there, whose names start with "p".
    numbers = (n for n in itertools.count(last + 1) if SPREAD[n % 100] == "p")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIWHEELS_")}
    env.update(PIWHEELS_DATA_DIR=str(data), PIWHEELS_LOCAL_BUILDER="false", PIWHEELS_DEBIAN_MIRROR="")
    extra = ["--full"] if options.full else []
    with tempfile.TemporaryDirectory(prefix="piwheels-publish-") as tmp:
        trees = {options.before: export(options.before, Path(tmp) / "before"), "this tree": ROOT}
        for tree in trees.values():
            add_wheel(db.engine, next(numbers), new_project=True)
            publish(tree, env, *extra)
        figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in trees}
        load = os.getloadavg()[0]
        for _ in range(options.runs):
            for name, tree in trees.items():
                add_wheel(db.engine, next(numbers), new_project=True)
                figures[name].append(publish(tree, env, *extra))
    db.dispose()
    print(f"{platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"load average {load:.1f} at the start; median of {options.runs} runs, interleaved; "
          f"farm: {data}\n")  # fmt: skip
    print("| tree | wall s (median) | CPU s (median) | peak MB (max) |")
    print("|---|---|---|---|")
    for name, runs in figures.items():
        walls, cpus, peaks = zip(*runs, strict=True)
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {max(peaks):.0f} |")
    before, after = (statistics.median(r[0] for r in runs) for runs in figures.values())
    print(f"\n{options.before} / this tree (median wall): {before / after:.1f}x")


if __name__ == "__main__":
    main()
