"""Build a list of real projects from PyPI on this machine and say what became of each one.

    .venv/bin/python bench/realworld.py [LIST] [--build-timeout S] [--slots N] [--out DIR]

LIST is a requirements-style file (NAME==VERSION a line; default bench/sample-top40.txt).
A fresh farm in ``--out`` (the local builder, the upstream PyPI, the builders' glibc this
machine's) runs ``init``, ``add -r LIST`` and ``run``; then, per project: built, mirrored from
the upstream, failed (reason, detail, suggested packages), builder fault, or why nothing was
needed (no sdist, no wheel for us), with the build's duration; and the wall time of each step.
Prints a Markdown table and writes ``realworld.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from piwheels_ctl.catalog.requirements import read_requirements  # noqa: E402 - after the path is set
from piwheels_ctl.db.engine import Database  # noqa: E402
from piwheels_ctl.db.models import Build, BuildStatus, File, Project, UpstreamWheel, Version  # noqa: E402

PIWHEELS = Path(sys.executable).parent / "piwheels-ctl"
DEFAULT_LIST = ROOT / "bench" / "sample-top40.txt"


def glibc() -> str:
    """This machine's glibc, "2.36": the local builder's."""
    name = os.confstr("CS_GNU_LIBC_VERSION") or ""
    return name.split()[-1] if name.startswith("glibc ") else ""


def step(env: dict[str, str], *args: str, timeout: float) -> tuple[float, str]:
    """Run ``piwheels-ctl args``; its wall time and output (both streams)."""
    start = time.perf_counter()
    done = subprocess.run(
        [str(PIWHEELS), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    took = time.perf_counter() - start
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise SystemExit(f"piwheels-ctl {' '.join(args)} exited {done.returncode}:\n{output[-4000:]}")
    return took, output


def outcome(session: Any, name: str, version: str) -> dict[str, Any]:
    """What became of NAME==VERSION (no VERSION: the one ``add`` chose): built, mirrored, failed,
    builder-fault, no-sdist, excluded or none."""
    query = select(Version).join(Version.project).where(Project.name == name)
    if version:
        query = query.where(Version.version == version)
    else:
        query = query.where(Version.priority > 0).order_by(Version.id.desc()).limit(1)
    row = session.scalar(query)
    if row is None:
        return {"outcome": "unknown", "detail": "not recorded"}
    files = list(session.scalars(select(File).where(File.version_id == row.id)))
    builds = [b for b in session.scalars(select(Build).where(Build.version_id == row.id)) if not b.superseded]
    given_up = [
        f"{w.filename}: {w.error}"
        for w in session.scalars(select(UpstreamWheel).where(UpstreamWheel.version_id == row.id))
        if w.given_up
    ]
    result: dict[str, Any] = {
        "version": row.version,
        "files": sorted(f.filename for f in files),
        "given_up": given_up,
    }
    failed = [b for b in builds if b.status is BuildStatus.FAILED]
    built = [b for b in builds if b.status is BuildStatus.SUCCESS]
    if any(f.mirrored for f in files):
        result["outcome"] = "mirrored"
    elif built:
        result.update(outcome="built", duration=max(b.duration or 0.0 for b in built))
    elif failed:
        build = failed[0]
        result.update(
            outcome="builder-fault" if build.failure_reason == "builder-fault" else "failed",
            reason=build.failure_reason,
            detail=build.failure_detail,
            evidence=build.failure_evidence,
            packages=build.failure_packages,
            duration=build.duration,
        )
    elif row.sdist_url is None:
        result.update(outcome="no-sdist", detail="no sdist, and no wheel of the upstream installs here")
    elif row.requires_python:
        result.update(outcome="excluded", detail=f"Requires-Python {row.requires_python}: not this Python")
    else:
        result.update(outcome="none", detail="nothing was built")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("list", nargs="?", type=Path, default=DEFAULT_LIST)
    parser.add_argument("--build-timeout", type=float, default=300.0, help="seconds per build")
    parser.add_argument("--slots", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=Path("/tmp/piwheels-realworld"))
    parser.add_argument("--report-only", action="store_true", help="report on the farm already in --out")
    args = parser.parse_args()
    if args.out.exists() and not args.report_only:
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIWHEELS_", "PIP_"))}
    env.update(
        PIWHEELS_DATA_DIR=str(args.out / "data"),
        PIWHEELS_BUILD_TIMEOUT=str(args.build_timeout),
        PIWHEELS_SLOTS=str(args.slots),
        PIWHEELS_MANYLINUX_GLIBC=glibc(),
        PIP_CONFIG_FILE="/dev/null",
    )
    wanted = read_requirements(args.list).wanted
    times: dict[str, float] = {}
    if not args.report_only:
        times["init"], _ = step(env, "init", timeout=120)
        times["add"], _ = step(env, "add", "-r", str(args.list), timeout=1800)
        times["run"], run_output = step(env, "run", timeout=args.build_timeout * len(wanted) + 3600)
        (args.out / "run.log").write_text(run_output)
        times["publish"], _ = step(env, "publish", timeout=600)
    _, failures = step(env, "failures", "--json", timeout=600)
    status = json.loads(step(env, "status", "--json", timeout=120)[1])
    db = Database(f"sqlite:///{args.out / 'data' / 'piwheels.db'}")
    rows = []
    try:
        with db.reader() as session:
            for want in wanted:
                version = next(iter(want.specifier)).version if want.specifier else ""
                rows.append(
                    {"name": want.canonical, "version": version, **outcome(session, want.canonical, version)}
                )
    finally:
        db.dispose()
    report = {
        "list": str(args.list),
        "build_timeout": args.build_timeout,
        "slots": args.slots,
        "glibc": env["PIWHEELS_MANYLINUX_GLIBC"],
        "times": times,
        "status": status,
        "projects": rows,
        "failures": json.loads(failures),
    }
    (args.out / "realworld.json").write_text(json.dumps(report, indent=2, default=str))
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
    print("| project | outcome | build s | detail |")
    print("|---|---|---|---|")
    for row in rows:
        detail = row.get("reason") or ""
        if row.get("detail"):
            detail += f" ({row['detail']})" if detail else row["detail"]
        if row.get("packages"):
            detail += f"; suggested: {', '.join(row['packages'])}"
        duration = f"{row['duration']:.1f}" if row.get("duration") else ""
        print(f"| {row['name']}=={row['version']} | {row['outcome']} | {duration} | {detail} |")
    print()
    print("totals: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print("wall s: " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()))


if __name__ == "__main__":
    main()
