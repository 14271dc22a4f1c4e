"""Where the CPU time of a cold build goes: two plain pips against `piwheels-ctl run`, by command.

    sudo .venv/bin/python bench/cputime.py [--workload FILE] [--out DIR]

Runs `bench/pipeline.py`'s baseline (two plain `pip wheel` processes on halves of the workload)
and its cold case (`piwheels-ctl run`, two slots, empty caches), each under the kernel's process
accounting (`accton`, from Debian's acct package: it needs root), and sums the user and system
time of every process that ended during each case by command name: compilers, assembler, the
backends' Python, uv, ccache, the controller. Rusage cannot say it: a finished build's sandbox is
killed whole, so its processes are never waited for by the controller.

Process accounting sees every process of the machine: measure on a quiet one.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pipeline

TICKS = 100  # dump-acct prints times in the kernel's accounting ticks (AHZ)


def accounted(work: Path, case: Callable[[], float]) -> tuple[float, dict[str, float]]:
    """The wall time of ``case`` and the CPU seconds, by command, of what ended while it ran."""
    with tempfile.NamedTemporaryFile(dir=work, suffix=".pacct") as record:
        subprocess.run(["accton", record.name], check=True, capture_output=True)
        try:
            wall = case()
        finally:
            subprocess.run(["accton", "off"], check=True, capture_output=True)
        dump = subprocess.run(["dump-acct", record.name], check=True, capture_output=True, text=True).stdout
    cpu: dict[str, float] = collections.defaultdict(float)
    for line in dump.splitlines():
        fields = [f.strip() for f in line.split("|")]
        cpu[fields[0]] += (float(fields[2]) + float(fields[3])) / TICKS
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", type=Path, default=pipeline.ROOT / "bench" / "workload-a.txt")
    parser.add_argument("--out", type=Path, default=Path("/tmp/piwheels-bench-cpu"))
    args = parser.parse_args()
    if os.geteuid() != 0 or not shutil.which("accton") or not shutil.which("dump-acct"):
        raise SystemExit("needs root and process accounting (apt-get install acct)")
    pins = [line.strip() for line in args.workload.read_text().splitlines() if line.strip()]
    work: Path = args.out
    work.mkdir(parents=True, exist_ok=True)
    upstream, _deps = pipeline.prepare(work, pins, runtime=False)
    data = work / "data"
    shutil.rmtree(data, ignore_errors=True)
    env = pipeline.pip_env(PIWHEELS_DATA_DIR=str(data), PIWHEELS_UPSTREAM=str(upstream), PIWHEELS_SLOTS="2",
                           PIWHEELS_PYTHONS=sys.executable)  # fmt: skip
    cli = [str(pipeline.PIWHEELS)]
    pipeline.sh([*cli, "init"], env)
    pipeline.sh([*cli, "add", *pins], env)
    cases = {
        "two plain pips": accounted(work, lambda: pipeline.baseline(work, upstream, pins)),
        "farm, cold": accounted(work, lambda: pipeline.timed([*cli, "run"], env)),
    }
    _print(cases, len(pins))


def _print(cases: dict[str, tuple[float, dict[str, float]]], projects: int) -> None:
    names = list(cases)
    total = {name: sum(cpu.values()) for name, (_wall, cpu) in cases.items()}
    commands = sorted(
        {c for _w, cpu in cases.values() for c in cpu},
        key=lambda c: -max(cpu.get(c, 0) for _w, cpu in cases.values()),
    )
    print(f"\n{projects} projects, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print("| | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    print("| wall s | " + " | ".join(f"{cases[n][0]:.1f}" for n in names) + " |")
    print("| CPU s, all processes | " + " | ".join(f"{total[n]:.1f}" for n in names) + " |")
    print("| cores busy (CPU / wall) | " + " | ".join(f"{total[n] / cases[n][0]:.2f}" for n in names) + " |")
    for command in commands:
        if any(cpu.get(command, 0) >= 0.1 for _w, cpu in cases.values()):
            print(
                f"| `{command}` | " + " | ".join(f"{cases[n][1].get(command, 0):.1f}" for n in names) + " |"
            )


if __name__ == "__main__":
    main()
