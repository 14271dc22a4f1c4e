"""How many wheels a rebuild of unchanged sdists gives back byte for byte, on real workloads.

    .venv/bin/python bench/reproducible.py [--workload FILE ...] [--out DIR] [--only N]

For each workload (A and B by default): a fresh farm on the sdists of the workload (downloaded
first, as bench/pipeline.py does), `run` and `publish`; then `rebuild` of every version, `run`
and `publish` again. A wheel is reproducible when the rebuild gave the same bytes: the farm then
keeps its name and adds no file. Prints a Markdown table and the projects whose bytes changed.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline import PIWHEELS, pip_env, prepare, sh

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Result:
    workload: str
    wheels: int  # built by the first run
    added: list[str]  # files the rebuild published besides them: bytes that changed


def published(www: Path) -> dict[str, str]:
    """Every wheel file under www/ and its sha256."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(www.rglob("*.whl"))}


def measure(workload: Path, work: Path, only: int | None) -> Result:
    pins = [line.strip() for line in workload.read_text().splitlines() if line.strip()][:only]
    work.mkdir(parents=True, exist_ok=True)
    upstream, _deps = prepare(work, pins, runtime=False)
    data = work / "data-reproducible"
    shutil.rmtree(data, ignore_errors=True)
    env = pip_env(PIWHEELS_DATA_DIR=str(data), PIWHEELS_UPSTREAM=str(upstream), PIWHEELS_SLOTS="2",
                  PIWHEELS_PYTHONS=sys.executable)  # fmt: skip
    cli = [str(PIWHEELS)]
    sh([*cli, "init"], env)
    sh([*cli, "add", *pins], env)
    sh([*cli, "run"], env)
    sh([*cli, "publish"], env)
    names = {pin.split("==")[0].lower().replace("-", "_") for pin in pins}
    first = {k: v for k, v in published(data / "www").items() if k.split("-")[0].lower() in names}
    for pin in pins:
        sh([*cli, "rebuild", pin], env)
    sh([*cli, "run"], env)
    sh([*cli, "publish"], env)
    second = {k: v for k, v in published(data / "www").items() if k.split("-")[0].lower() in names}
    added = sorted(set(second) - set(first))
    return Result(workload.name, len(first), added)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", type=Path, action="append")
    parser.add_argument("--out", type=Path, default=Path("/tmp/piwheels-bench"))
    parser.add_argument("--only", type=int, help="Use the first N projects of each (a smoke run).")
    args = parser.parse_args()
    workloads = args.workload or [ROOT / "bench" / "workload-a.txt", ROOT / "bench" / "workload-b.txt"]
    results = [measure(w, args.out / w.stem, args.only) for w in workloads]
    print("\n| workload | wheels built | byte-identical after a rebuild | files a rebuild added |")
    print("|---|---|---|---|")
    for r in results:
        print(f"| {r.workload} | {r.wheels} | {r.wheels - len(r.added)} | {len(r.added)} |")
    for r in results:
        for name in r.added:
            print(f"not reproducible: {name}")


if __name__ == "__main__":
    main()
