"""What the build sandbox costs per build: a no-op build and a real one, side by side.

    .venv/bin/python bench/sandbox_cost.py [--runs 20] [--real-runs 5]

Cases, each timed in the same run: the bare command (no agent, no sandbox), the agent with the
bubblewrap sandbox (namespaces, proxy, relay, watchdog), and the agent with the uid fallback
(no namespaces). The no-op build is a fake interpreter whose ``pip wheel`` exits at once, so it
measures the sandbox alone; the real build is ``pip wheel`` of a small pure-Python sdist, built
from a local folder (no network). Run as root: the agent then gives each build a uid of its own.
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

from piwheels_ctl.agent import buildstep  # noqa: E402 - after the path is set
from piwheels_ctl.agent.jobspec import request  # noqa: E402 - after the path is set

from sdists import make_sdist, pip_env  # noqa: E402

# The system's Python (Debian's, with python3-pip): any build uid can run it, unlike a venv in /root.
PYTHON = "/usr/bin/python3"
NOOP = '#!/bin/sh\n[ "$1" = "-m" ] || exec /usr/bin/python3 "$@"\nexit 0\n'


def timed(runs: int, step: Callable[[int], object]) -> float:
    """Median wall time of ``runs`` calls of ``step``."""
    times = []
    for n in range(runs):
        started = time.perf_counter()
        step(n)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--real-runs", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="piwheels-bench-sandbox-"))
    work.chmod(0o755)
    try:
        fake = work / "fake" / "bin" / "python"
        fake.parent.mkdir(parents=True)
        fake.write_text(NOOP)
        fake.chmod(0o755)
        links = work / "links"
        make_sdist(ROOT / "tests" / "packages" / "pure-ok", links)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--dest", str(links), "setuptools", "wheel"],
            env=pip_env(), check=True,
        )  # fmt: skip

        def build(python: str, kind: str, real: bool) -> Callable[[int], object]:
            def step(n: int) -> object:
                out = work / f"out-{kind}-{real}-{n}"
                result = buildstep.build(request(
                    python, "pure-ok", "1.0", str(out), str(out) + ".log", str(work / "builds"),
                    find_links=[str(links)], sandbox_kind=kind,
                ))  # fmt: skip
                if real and result["status"] != "success":
                    raise SystemExit(f"{kind}: {result}")
                return result

            return step

        plain_noop = timed(
            args.runs, lambda _n: subprocess.run([str(fake), "-m", "pip", "wheel"], check=True)
        )
        rows: list[tuple[str, float, float | None]] = [
            ("no-op build, bare command (no agent)", plain_noop, None)
        ]
        for kind in ("bwrap", "user"):
            noop = timed(args.runs, build(str(fake), kind, False))
            rows.append((f"no-op build, agent + `{kind}` sandbox", noop, noop - plain_noop))
        real_plain = timed(
            args.real_runs,
            lambda n: subprocess.run(
                [PYTHON, "-m", "pip", "wheel", "-q", "--no-deps", "--no-cache-dir", "--no-index",
                 "--find-links", str(links), "--wheel-dir", str(work / f"plain-{n}"), "pure-ok==1.0"],
                env=pip_env(), check=True,
            ),
        )  # fmt: skip
        rows.append(("real build of a pure sdist, plain `pip wheel`", real_plain, None))
        for kind in ("bwrap", "user"):
            real = timed(args.real_runs, build(PYTHON, kind, True))
            rows.append((f"real build, agent + `{kind}` sandbox", real, real - real_plain))
        print("| case | median s | cost over the bare case |")
        print("|---|---|---|")
        for case, seconds, extra in rows:
            cost = "" if extra is None else f"{extra * 1000:+.0f} ms"
            print(f"| {case} | {seconds:.3f} | {cost} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
