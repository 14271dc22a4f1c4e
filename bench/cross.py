"""ARM wheels per hour: a cross builder (the agent's --cross in the x86_64 bookworm root with
Debian's cross toolchains) against the emulated builder (the agent under qemu-user in the
bookworm root of the target), on the same small C/C++ sdists, and whether they give the same
wheels.

    .venv/bin/python bench/cross.py [--target armhf] [--runs 1] [--sdists FILE]

``--sdists FILE`` (NAME==VERSION a line, e.g. small C/C++/Cython projects of
bench/workload-*.txt): those real sdists from PyPI instead of the generated ones, each with its
build requirements' pure wheels (the cross build's frontend picks the target's wheels, so a
compiled build requirement cannot run there); a build that fails is reported, not fatal.
Each sdist is built by the agent in its sandbox (bubblewrap, pip, build requirements from a
local folder, no network) by both builders one after the other, timed from the agent's start to
its answer. Agreement: the same wheel name (tags), the same member names, the same bytes. The
roots are the tests' cached ones (tests/cross_roots.py, tests/arm_roots.py), made on first use.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from piwheels_ctl.agent import agent as agent_module  # noqa: E402

from arm_roots import arm_root  # noqa: E402 - after the path is set
from cross_roots import cross_root  # noqa: E402
from debian_roots import run_in_root  # noqa: E402
from sdists import make_sdist, pip_env, setuptools_project  # noqa: E402

MODULE = """#include <Python.h>
%s
static PyMethodDef methods[] = {%s{NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "%s", NULL, -1, methods};
PyMODINIT_FUNC PyInit_%s(void) { return PyModule_Create(&module); }
"""
FUNCTION = """static PyObject *f%d(PyObject *self, PyObject *arg) {
    long x = PyLong_AsLong(arg), acc = %d;
    for (int i = 0; i < 64; i++) { acc = acc * 31 + (x ^ i) %% %d; }
    return PyLong_FromLong(acc);
}
"""
CPP = """#include <Python.h>
#include <algorithm>
#include <map>
#include <string>
#include <vector>
template <int N> struct Fold { static long run(long x) { return Fold<N - 1>::run(x * 3 + N); } };
template <> struct Fold<0> { static long run(long x) { return x; } };
static PyObject *fold(PyObject *, PyObject *arg) {
    std::vector<long> v(100, PyLong_AsLong(arg));
    std::map<std::string, long> m;
    for (auto &x : v) { m[std::to_string(x % 7)] += Fold<200>::run(x); }
    return PyLong_FromLong(m.begin()->second);
}
static PyMethodDef methods[] = {{"fold", fold, METH_O, nullptr}, {nullptr, nullptr, 0, nullptr}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "cppfold", nullptr, -1, methods};
PyMODINIT_FUNC PyInit_cppfold(void) { return PyModule_Create(&module); }
"""


def c_project(base: Path, name: str, functions: int) -> Path:
    body = "".join(FUNCTION % (i, i, i + 7) for i in range(functions))
    table = "".join(f'{{"f{i}", f{i}, METH_O, NULL}}, ' for i in range(functions))
    setup = (
        f'from setuptools import Extension, setup\nsetup(ext_modules=[Extension("{name}", ["{name}.c"])])\n'
    )
    return setuptools_project(
        base, name, {"setup.py": setup, f"{name}.c": MODULE % (body, table, name, name)}
    )


def workload(base: Path) -> list[Path]:
    """Small real sdists: a tiny C module, a larger generated one, a C++ one with templates."""
    cpp_setup = (
        "from setuptools import Extension, setup\n"
        'setup(ext_modules=[Extension("cppfold", ["cppfold.cpp"], language="c++",\n'
        '                             extra_compile_args=["-O2"])])\n'
    )
    return [
        c_project(base, "tinyc", 1),
        c_project(base, "widec", 400),
        setuptools_project(base, "cppfold", {"setup.py": cpp_setup, "cppfold.cpp": CPP}),
    ]


def real_sdists(listing: Path, dest: Path, deps: Path) -> list[Path]:
    """The sdists of ``listing`` from PyPI, and their build requirements' pure wheels into ``deps``."""
    wanted = [line.split("#")[0].strip() for line in listing.read_text().splitlines()]
    found = []
    for pin in filter(None, wanted):
        folder = dest / pin.split("==")[0]
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
             "--dest", str(folder), pin],
            env=pip_env(), check=True, capture_output=True,
        )  # fmt: skip
        [sdist] = folder.glob("*.tar.gz")
        with tarfile.open(sdist) as archive:
            member = next((m for m in archive.getmembers() if m.name.count("/") == 1
                           and m.name.endswith("/pyproject.toml")), None)  # fmt: skip
            extracted = archive.extractfile(member) if member else None
            table = tomllib.loads(extracted.read().decode()) if extracted else {}
        requires = table.get("build-system", {}).get("requires", ["setuptools>=40.8.0"])
        fetched = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--only-binary", ":all:", "--python-version",
             "3.11", "--platform", "linux_armv7l", "--dest", str(deps), *requires],
            env=pip_env(), capture_output=True, text=True,
        )  # fmt: skip
        if fetched.returncode != 0:
            print(f"{pin}: no pure wheels of its build requirements {requires}; left out")
            continue
        found.append(sdist)
    return found


def build_deps(dest: Path) -> Path:
    """setuptools and wheel for the builds' isolated environments and pip to run them, from PyPI once."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--only-binary", ":all:", "--python-version", "3.11",
         "--dest", str(dest), "setuptools", "wheel", "pip"],
        env=pip_env(), check=True, capture_output=True,
    )  # fmt: skip
    return dest


def stage(root: Path, deps: Path, name: str) -> Path:
    place = root / "tmp" / f"bench-cross-{name}"
    shutil.rmtree(place, ignore_errors=True)
    (place / "agent").mkdir(parents=True)
    here = Path(agent_module.__file__).parent
    for module in agent_module.MODULES:
        shutil.copy(here / module, place / "agent" / module)
    shutil.copytree(deps, place / "deps")
    for folder, _dirs, files in os.walk(place):
        os.chmod(folder, 0o755)
        for file in files:
            os.chmod(os.path.join(folder, file), 0o644)
    return place


def build(root: Path, place: Path, sdist: Path, run: int, *extra: str) -> tuple[float, Path | None]:
    """One build by the agent in ``root`` of ``sdist`` (a file): its wall time and the wheel (None:
    it failed, and the end of its log was printed)."""
    sdist = Path(shutil.copy(sdist, place / sdist.name))
    name, version = sdist.name.removesuffix(".tar.gz").rsplit("-", 1)
    inside = "/" + str(place.relative_to(root))
    out = f"{inside}/out-{name}-{run}"
    pip = sorted((place / "deps").glob("pip-*.whl"))[-1]  # the roots of the targets have no pip
    argv = [
        "python3", f"{inside}/agent/agent.py", "build", "--python", "/usr/bin/python3",
        "--name", name, "--version", version,
        "--outbox", out, "--log", f"{out}/build.log", "--work-root", f"{inside}/work",
        "--sdist-url", f"file://{inside}/{sdist.name}", "--find-links", f"{inside}/deps",
        "--frontend", f"{inside}/deps/{pip.name}", *extra,
    ]  # fmt: skip
    started = time.perf_counter()
    done = run_in_root(root, argv, timeout=3600)
    took = time.perf_counter() - started
    answer = json.loads(done.stdout.splitlines()[-1])
    if answer.get("status") != "success":
        log = (root / out.lstrip("/") / "build.log").read_text(errors="replace")[-1500:]
        print(f"{name} in {root.name}: {answer.get('status')} {answer.get('error') or ''}\n{log}")
        return took, None
    return took, root / out.lstrip("/") / answer["files"][0]["name"]


def members(wheel: Path) -> dict[str, str]:
    with zipfile.ZipFile(wheel) as archive:
        return {i.filename: hashlib.sha256(archive.read(i)).hexdigest() for i in archive.infolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", choices=["armhf", "arm64"], default="armhf")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--sdists", type=Path, help="real sdists from PyPI, NAME==VERSION a line")
    args = parser.parse_args()
    cross, native = cross_root(), arm_root("bookworm", args.target)
    work = Path(tempfile.mkdtemp(prefix="piwheels-bench-cross-"))
    places: list[Path] = []
    try:
        deps = build_deps(work / "deps")
        if args.sdists:
            sdists = real_sdists(args.sdists, work / "sdists", deps)
        else:
            sdists = [make_sdist(project, work / "sdists") for project in workload(work / "projects")]
        places = [stage(cross, deps, "cross"), stage(native, deps, "emulated")]
        rows = []
        for sdist in sdists:
            times: dict[str, list[float]] = {"cross": [], "emulated": []}
            wheels: dict[str, Path | None] = {}
            for run in range(args.runs):
                took, wheels["cross"] = build(cross, places[0], sdist, run, "--cross", args.target)
                times["cross"].append(took)
                took, wheels["emulated"] = build(native, places[1], sdist, run)
                times["emulated"].append(took)
            ours, theirs = (members(w) if w else {} for w in (wheels["cross"], wheels["emulated"]))
            names = [w.name if w else None for w in (wheels["cross"], wheels["emulated"])]
            rows.append((
                sdist.name.removesuffix(".tar.gz"), statistics.median(times["cross"]),
                statistics.median(times["emulated"]), names,
                bool(ours) and sorted(ours) == sorted(theirs), sum(ours[m] == theirs.get(m) for m in ours),
                len(ours),
            ))  # fmt: skip
        print(f"target {args.target}, {args.runs} run(s) each, medians; roots {cross.name}, {native.name}")
        print(f"{'sdist':24} {'cross s':>8} {'emul. s':>8} {'speed-up':>8}  built (cross, emulated)  "
              "same name  same members  same bytes")  # fmt: skip
        for name, c, e, (ours_name, theirs_name), same_members, same_bytes, total in rows:
            built = f"{ours_name is not None!s:5}, {theirs_name is not None!s:5}"
            print(f"{name:24} {c:8.1f} {e:8.1f} {e / c:7.1f}x  {built:23}  {ours_name == theirs_name!s:9}  "
                  f"{same_members!s:12}  {same_bytes}/{total}")  # fmt: skip
        both = [r for r in rows if None not in r[3]]
        crossed = sum(r[3][0] is not None for r in rows)
        print(f"cross-built {crossed} of {len(rows)}; both built {len(both)}, of which the same members "
              f"{sum(bool(r[4]) for r in both)}")  # fmt: skip
        if both:
            total_c, total_e = sum(r[1] for r in both), sum(r[2] for r in both)
            per_hour = f"cross {3600 * len(both) / total_c:.0f}, emulated {3600 * len(both) / total_e:.0f}"
            print(f"wheels per hour (what both built): {per_hour} ({total_e / total_c:.1f}x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for place in places:
            shutil.rmtree(place, ignore_errors=True)


if __name__ == "__main__":
    main()
