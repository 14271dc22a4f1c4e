"""What the load check costs per build: a small C extension's wheel and larger real ones, side by
side with the build of that small wheel.

    .venv/bin/python bench/load_check.py [--runs 10] [--wheel PATH]...

Cases, each timed in the same run: ``pip wheel`` of the ``c-ext`` fixture (a real build, for
scale), then the load check (``agent/loadcheck.check``: unpack into a fresh folder, ``dlopen``
every shared object with RTLD_NOW and import every extension module, in a child interpreter) of
its wheel and of each ``--wheel`` (for instance numpy's, many modules and a bundled OpenBLAS), in
the bubblewrap sandbox and in the uid fallback's way (no namespaces). The wheels must be for this
interpreter. No network.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from piwheels_ctl.agent import loadcheck, sandbox  # noqa: E402 - after the path is set

from sdists import pip_env  # noqa: E402


def timed(runs: int, step: Callable[[], object]) -> float:
    """Median wall time of ``runs`` calls of ``step``."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--wheel", type=Path, action="append", default=[], help="another wheel to check")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="piwheels-bench-loadcheck-"))
    try:
        out = work / "wheels"

        def build() -> None:
            shutil.rmtree(out, ignore_errors=True)
            subprocess.run(
                [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                 "-w", str(out), str(ROOT / "tests" / "packages" / "c-ext")],
                env=pip_env(), check=True, capture_output=True,
            )  # fmt: skip

        build_time = timed(3, build)
        wheels = [next(out.glob("*.whl")), *args.wheel]
        kinds = [k for k in ("bwrap", "user") if k != "bwrap" or sandbox.choose("auto")[0] == "bwrap"]
        print(f"| case | median s | share of the small build ({build_time:.2f} s) |")
        print("|---|---|---|")
        print(f"| `pip wheel` of the c-ext fixture (no build isolation) | {build_time:.3f} | |")
        for wheel in wheels:
            for kind in kinds:

                def check(wheel: Path = wheel, kind: str = kind) -> None:
                    found = loadcheck.check(
                        sys.executable, [str(wheel)], str(work), kind, None, False, 300, 0, 4096
                    )
                    if not found["ok"]:
                        raise SystemExit(f"{wheel.name}: {found}")

                took = timed(args.runs, check)
                size = wheel.stat().st_size / 1e6
                print(f"| load check of {wheel.name} ({size:.1f} MB), `{kind}` | {took:.3f} | "
                      f"{100 * took / build_time:.1f}% |")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
