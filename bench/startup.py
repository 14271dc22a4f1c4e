"""How long the light commands and a no-op `run` take, and what they import: a git ref against this tree.

    .venv/bin/python bench/startup.py [--before main] [--runs 10]
    PIWHEELS_UPSTREAM=... PIWHEELS_PYTHONS=... .venv/bin/python bench/startup.py --data FARM/data

Both trees run with this virtualenv, side by side in one run and interleaved: the ``--before``
ref's ``piwheels_ctl`` is exported with ``git archive`` into a temporary folder and put first on
``sys.path``. Each command runs against the same data folder: a freshly initialised one (empty
SQLite database, the local builder), or with ``--data`` a farm's, with the ``PIWHEELS_*``
settings of this environment (those the farm was built with). ``run`` is measured only when it
has nothing to build: each of its runs must report "built 0, failed 0, remaining 0". Reports,
per command and tree, the median wall time of ``--runs`` runs, the sum of the import times
``python -X importtime`` reports, the number of modules imported, and which of the heavy
dependencies were imported.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = (["--version"], ["--help"], ["status"], ["queue"], ["run"])
HEAVY = ("sqlalchemy", "alembic", "pydantic", "jinja2", "wheel", "paramiko", "rich.table", "pypi_simple",
         "piwheels_ctl.builds.record")  # fmt: skip
NOTHING_BUILT = "built 0, failed 0, remaining 0"
# Runs the CLI of the tree first on sys.path, then prints which modules it imported.
RUNNER = """\
import sys
sys.path.insert(0, sys.argv.pop(1))
import piwheels_ctl.cli
assert piwheels_ctl.cli.__file__.startswith(sys.path[0]), piwheels_ctl.cli.__file__
try:
    code = piwheels_ctl.cli.main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
sys.stdout.flush()
sys.stderr.write("MODULES " + " ".join(sorted(sys.modules)) + "\\n")
sys.exit(code)
"""


def export(ref: str, dest: Path) -> Path:
    """``ref``'s piwheels_ctl package under ``dest``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", ref, "piwheels_ctl"],
        check=True,
        capture_output=True,
    ).stdout
    dest.mkdir(parents=True)
    tar = dest / "src.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as opened:
        opened.extractall(dest, filter="data")
    return dest


def run(tree: Path, args: list[str], env: dict[str, str], importtime: bool = False) -> tuple[float, str]:
    command = [sys.executable, *(["-X", "importtime"] if importtime else []), "-c", RUNNER, str(tree), *args]
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, cwd=env["PIWHEELS_DATA_DIR"])
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        said = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("MODULES "))
        raise SystemExit(f"{' '.join(args)} with {tree} exited {proc.returncode}:\n{said}")
    if args == ["run"] and NOTHING_BUILT not in proc.stdout:
        raise SystemExit(f"run with {tree} was not a no-op: {proc.stdout.strip()}")
    return elapsed, proc.stderr


def imports(stderr: str) -> tuple[float, set[str]]:
    """The summed self import time (ms) and the modules imported."""
    total = 0
    modules: set[str] = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "self [us]" not in line:
            total += int(line.split(":", 1)[1].split("|")[0])
        elif line.startswith("MODULES "):
            modules = set(line.split()[1:])
    return total / 1000, modules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="main", help="git ref to compare with (default: main)")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--data", type=Path, help="a farm's data folder (default: a new, empty one)")
    options = parser.parse_args()
    if options.data and not options.data.is_dir():
        parser.error(f"--data {options.data}: not a folder")
    with tempfile.TemporaryDirectory(prefix="piwheels-startup-") as tmp:
        before = export(options.before, Path(tmp) / "before")
        after = ROOT
        if options.data:
            data = options.data.resolve()
            env = dict(os.environ)
        else:
            data = Path(tmp) / "data"
            data.mkdir()
            env = {k: v for k, v in os.environ.items() if not k.startswith("PIWHEELS_")}
            env.update(PIWHEELS_DEBIAN_MIRROR="")
        env.update(PIWHEELS_DATA_DIR=str(data), COLUMNS="100")
        if not options.data:
            run(after, ["init"], env)
        run(after, ["run"], env)  # the local builder's ABIs are registered: every later run is a no-op
        trees = {options.before: before, "this tree": after}
        load = os.getloadavg()[0]
        print(f"{platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPUs, "
              f"load average {load:.1f} at the start; median of {options.runs} runs, interleaved; "
              f"data: {options.data or 'a new, empty folder'}\n")  # fmt: skip
        print("| command | tree | wall s (median) | imports ms | modules | heavy ones imported |")
        print("|---|---|---|---|---|---|")
        for args in COMMANDS:
            walls: dict[str, list[float]] = {name: [] for name in trees}
            for _ in range(options.runs):
                for name, tree in trees.items():
                    walls[name].append(run(tree, args, env)[0])
            for name, tree in trees.items():
                milliseconds, modules = imports(run(tree, args, env, importtime=True)[1])
                heavy = [h for h in HEAVY if h in modules] or ["none"]
                print(
                    f"| `{' '.join(args)}` | {name} | {statistics.median(walls[name]):.3f} | "
                    f"{milliseconds:.0f} | {len(modules)} | {', '.join(heavy)} |"
                )


if __name__ == "__main__":
    main()
