"""Time the one-machine pipeline on a workload of real sdists, side by side with plain pip.

    .venv/bin/python bench/pipeline.py [--workload FILE] [--out DIR] [--only N]

Cases, all in one run so that their ratios hold on a noisy machine:
  baseline   two plain `pip wheel` processes on balanced halves, no ccache
  cold       `piwheels-ctl run` of the whole workload, empty ccache, two slots
  warm       `rebuild` of the same versions, then `run` (ccache warm; its hit rate from `status`)
  idle       `run` with nothing to build (median of 5)
  install    new venv + pip install of the workload: from our served index, from a plain
             folder of the same wheels, from the sdists
Everything is downloaded first: no timed step touches the network.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

from pypi_simple import PYPI_SIMPLE_ENDPOINT

from piwheels_ctl.farm import frontend

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on older controllers only
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PIWHEELS = BIN / "piwheels-ctl"


def pip_env(**extra: str) -> dict[str, str]:
    """The environment of a user's pip: no machine-wide pip settings, no ccache on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PIWHEELS_"))}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if "ccache" not in p)
    env.update(PIP_CONFIG_FILE="/dev/null", PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
    return env


def sh(cmd: list[str], env: dict[str, str] | None = None) -> str:
    done = subprocess.run(cmd, env=env or pip_env(), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return done.stdout


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    sh(cmd, env)
    return time.perf_counter() - start


def pip(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", *args]


def build_requires(sdist: Path) -> list[str]:
    """The [build-system] requires of an sdist (setuptools and wheel when it has none)."""
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            if member.name.count("/") == 1 and member.name.endswith("/pyproject.toml"):
                f = archive.extractfile(member)
                assert f is not None
                requires: list[str] = tomllib.load(f).get("build-system", {}).get("requires", [])
                return requires or ["setuptools", "wheel"]
    return ["setuptools", "wheel"]


def prepare(work: Path, pins: list[str], runtime: bool = True) -> tuple[Path, Path]:
    """Download the sdists and their build dependencies (upstream/), and (``runtime``, for the
    install cases) runtime dependencies (deps/)."""
    upstream, deps = work / "upstream", work / "deps"
    index = ["--index-url", PYPI_SIMPLE_ENDPOINT]
    if not upstream.exists():
        # Sdists of the twelve only: their build requirements (which pip installs to read an
        # sdist's metadata) come as wheels, not built from source too.
        built = ",".join(pin.split("==")[0] for pin in pins)
        sh(pip("download", "--no-deps", "--no-binary", built, "-d", str(upstream), *index, *pins))
        requires = {r for sdist in upstream.iterdir() for r in build_requires(sdist)}
        requires |= {"setuptools", "wheel"}
        sh(pip("download", "--only-binary", ":all:", "-d", str(upstream), *index, *sorted(requires)))
    # The builds' frontends (piwheels_ctl.farm.frontend), which the controller fetches from the same
    # folder: the pinned pip and uv for this machine.
    python = sys.version_info[:2]
    wanted = {f"pip-{frontend.pip_version(python)}-": [f"pip=={frontend.pip_version(python)}"],
              f"uv-{frontend.UV_VERSION}-": ["--platform", f"manylinux_2_17_{os.uname().machine}",
                                             f"uv=={frontend.UV_VERSION}"]}  # fmt: skip
    for prefix, args in wanted.items():
        if not any(upstream.glob(f"{prefix}*.whl")):
            sh(pip("download", "--no-deps", "--only-binary", ":all:", "-d", str(upstream), *index, *args))
    if runtime and not deps.exists():
        sh(pip("download", "--only-binary", ":all:", "-d", str(deps), *index, *pins))
        names = {pin.split("==")[0].lower().replace("-", "_") for pin in pins}
        for wheel in deps.glob("*.whl"):
            if wheel.name.split("-")[0].lower() in names:
                wheel.unlink()  # only the dependencies: the twelve come from what is measured
    return upstream, deps


def baseline(work: Path, upstream: Path, pins: list[str]) -> float:
    """Two plain pip processes at once, each building half of the workload in turn."""
    out = work / "baseline"
    shutil.rmtree(out, ignore_errors=True)
    halves = [pins[0::2], pins[1::2]]
    scripts = [
        " && ".join(
            f"{sys.executable} -m pip wheel --no-deps --no-cache-dir --no-index --find-links {upstream} "
            f"--no-binary {pin.split('==')[0]} -w {out} {pin}"
            for pin in half
        )
        for half in halves
        if half
    ]
    start = time.perf_counter()
    procs = [subprocess.Popen(["sh", "-c", s], env=pip_env(), stdout=subprocess.DEVNULL) for s in scripts]
    if any(p.wait() != 0 for p in procs):
        raise SystemExit("baseline pip wheel failed")
    return time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def install(work: Path, name: str, sources: list[str], pins: list[str]) -> float:
    """A new venv and pip install of the workload from ``sources``."""
    venv = work / f"venv-{name}"
    shutil.rmtree(venv, ignore_errors=True)
    start = time.perf_counter()
    sh([sys.executable, "-m", "venv", str(venv)])
    sh([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-cache-dir", *sources, *pins])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", type=Path, default=ROOT / "bench" / "workload-a.txt")
    parser.add_argument("--out", type=Path, default=Path("/tmp/piwheels-bench"))
    parser.add_argument("--only", type=int, help="Use the first N projects (a smoke run).")
    parser.add_argument("--no-install", action="store_true", help="Measure the builds only.")
    args = parser.parse_args()
    pins = [line.strip() for line in args.workload.read_text().splitlines() if line.strip()]
    pins = pins[: args.only] if args.only else pins
    work: Path = args.out
    work.mkdir(parents=True, exist_ok=True)
    upstream, deps = prepare(work, pins, runtime=not args.no_install)
    data = work / "data"
    shutil.rmtree(data, ignore_errors=True)
    env = pip_env(PIWHEELS_DATA_DIR=str(data), PIWHEELS_UPSTREAM=str(upstream), PIWHEELS_SLOTS="2",
                  PIWHEELS_PYTHONS=sys.executable)  # fmt: skip
    cli = [str(PIWHEELS)]
    sh([*cli, "init"], env)
    sh([*cli, "add", *pins], env)
    figures: dict[str, float] = {}
    figures["baseline"] = baseline(work, upstream, pins)
    figures["cold"] = timed([*cli, "run"], env)
    status = json.loads(sh([*cli, "status", "--json"], env))
    if status["builds"]["success"] != len(pins):
        raise SystemExit(f"cold run built {status['builds']} of {len(pins)}")
    for pin in pins:
        sh([*cli, "rebuild", pin], env)
    figures["warm"] = timed([*cli, "run"], env)
    after = json.loads(sh([*cli, "status", "--json"], env))["ccache"]
    before = status["ccache"]  # the cold run's builds; the warm run's are the difference
    hits, misses = after["hits"] - before["hits"], after["misses"] - before["misses"]
    figures["warm_ccache_hit_rate"] = 100 * hits / (hits + misses) if hits + misses else 0.0
    figures["idle"] = statistics.median(timed([*cli, "run"], env) for _ in range(5))
    if not args.no_install:
        figures.update(installs(work, env, data, upstream, deps, pins))
    (work / "figures.json").write_text(json.dumps(figures, indent=2))
    _print(figures, len(pins))


def installs(
    work: Path, env: dict[str, str], data: Path, upstream: Path, deps: Path, pins: list[str]
) -> dict[str, float]:
    """The install cases: from our served index, from a folder of the same wheels, from sdists."""
    cli = [str(PIWHEELS)]
    figures: dict[str, float] = {}
    sh([*cli, "publish"], env)
    wheels = work / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    shutil.copytree(deps, wheels)
    for wheel in (data / "www" / "simple").glob("*/*.whl"):
        shutil.copy(wheel, wheels)
    port = free_port()
    server = subprocess.Popen([*cli, "serve", "--port", str(port)], env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/simple/"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url, timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        served = ["--index-url", url, "--find-links", str(deps)]
        folder = ["--no-index", "--find-links", str(wheels)]
        figures["install_index"] = statistics.median(install(work, "index", served, pins) for _ in range(3))
        figures["install_folder"] = statistics.median(install(work, "folder", folder, pins) for _ in range(3))
    finally:
        server.terminate()
        server.wait()
    names = ",".join(pin.split("==")[0] for pin in pins)
    from_sdists = ["--no-index", "--find-links", str(upstream), "--find-links", str(deps)]
    from_sdists += ["--no-binary", names]
    figures["install_sdists"] = install(work, "sdists", from_sdists, pins)
    return figures


def _print(f: dict[str, float], projects: int) -> None:
    """The figures as a Markdown table."""
    rows = [
        ("two plain pip processes, no ccache", f["baseline"], "1.00"),
        ("piwheels-ctl run, cold (2 slots)", f["cold"], f"{f['baseline'] / f['cold']:.2f}x"),
        ("rebuild, warm ccache", f["warm"],
         f"{f['cold'] / f['warm']:.2f}x faster than cold; ccache hits {f['warm_ccache_hit_rate']:.0f}%"),
        ("run with nothing to build (median of 5)", f["idle"], ""),
    ]  # fmt: skip
    if "install_index" in f:
        rows += [
        ("new venv + install from our index (median of 3)", f["install_index"], "1.00"),
        ("new venv + install from a wheel folder (median of 3)", f["install_folder"],
         f"{f['install_folder'] / f['install_index']:.2f}x"),
        ("new venv + install from sdists", f["install_sdists"],
         f"{f['install_sdists'] / f['install_index']:.1f}x slower"),
        ]  # fmt: skip
    print(f"\n{projects} projects\n\n| case | wall s | ratio |\n|---|---|---|")
    for label, seconds, ratio in rows:
        print(f"| {label} | {seconds:.2f} | {ratio} |")


if __name__ == "__main__":
    main()
