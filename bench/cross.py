"""ARM wheels per hour: a cross builder (the agent's --cross in the x86_64 bookworm root with
Debian's cross toolchains) against the emulated builder (the agent under qemu-user in the
bookworm root of the target), on the same small C/C++ sdists, and whether they give the same
wheels.

    .venv/bin/python bench/cross.py [--target armhf] [--runs 1]

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
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from cross_roots import cross_root  # noqa: E402

from piwheels_ctl.agent import agent as agent_module  # noqa: E402

from arm_roots import arm_root  # noqa: E402 - after the path is set
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


def build(root: Path, place: Path, project: Path, run: int, *extra: str) -> tuple[float, Path]:
    """One build by the agent in ``root``: its wall time and the wheel."""
    sdist = make_sdist(project, place)
    inside = "/" + str(place.relative_to(root))
    out = f"{inside}/out-{project.name}-{run}"
    pip = sorted((place / "deps").glob("pip-*.whl"))[-1]  # the roots of the targets have no pip
    argv = [
        "python3", f"{inside}/agent/agent.py", "build", "--python", "/usr/bin/python3",
        "--name", project.name,
        "--version", "1.0", "--outbox", out, "--log", f"{out}/build.log", "--work-root", f"{inside}/work",
        "--sdist-url", f"file://{inside}/{sdist.name}", "--find-links", f"{inside}/deps",
        "--frontend", f"{inside}/deps/{pip.name}", *extra,
    ]  # fmt: skip
    started = time.perf_counter()
    done = run_in_root(root, argv, timeout=3600)
    took = time.perf_counter() - started
    answer = json.loads(done.stdout.splitlines()[-1])
    if answer.get("status") != "success":
        log = (root / out.lstrip("/") / "build.log").read_text(errors="replace")[-2000:]
        raise SystemExit(f"{project.name} in {root.name}: {answer}\n{log}")
    return took, root / out.lstrip("/") / answer["files"][0]["name"]


def members(wheel: Path) -> dict[str, str]:
    with zipfile.ZipFile(wheel) as archive:
        return {i.filename: hashlib.sha256(archive.read(i)).hexdigest() for i in archive.infolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", choices=["armhf", "arm64"], default="armhf")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    cross, native = cross_root(), arm_root("bookworm", args.target)
    work = Path(tempfile.mkdtemp(prefix="piwheels-bench-cross-"))
    places: list[Path] = []
    try:
        deps = build_deps(work / "deps")
        places = [stage(cross, deps, "cross"), stage(native, deps, "emulated")]
        rows = []
        for project in workload(work / "projects"):
            times: dict[str, list[float]] = {"cross": [], "emulated": []}
            wheels: dict[str, Path] = {}
            for run in range(args.runs):
                took, wheels["cross"] = build(cross, places[0], project, run, "--cross", args.target)
                times["cross"].append(took)
                took, wheels["emulated"] = build(native, places[1], project, run)
                times["emulated"].append(took)
            ours, theirs = members(wheels["cross"]), members(wheels["emulated"])
            rows.append((
                project.name, statistics.median(times["cross"]), statistics.median(times["emulated"]),
                wheels["cross"].name == wheels["emulated"].name, sorted(ours) == sorted(theirs),
                sum(ours[m] == theirs.get(m) for m in ours), len(ours),
            ))  # fmt: skip
        print(f"target {args.target}, {args.runs} run(s) each, medians; roots {cross.name}, {native.name}")
        print(
            f"{'sdist':10} {'cross s':>8} {'emul. s':>8} {'speed-up':>8}  same name  same members  same bytes"
        )
        for name, c, e, same_name, same_members, same_bytes, total in rows:
            ratio = f"{e / c:7.1f}x"
            print(
                f"{name:10} {c:8.1f} {e:8.1f} {ratio}  {same_name!s:9}  {same_members!s:12}  "
                f"{same_bytes}/{total}"
            )
        total_c, total_e = sum(r[1] for r in rows), sum(r[2] for r in rows)
        per_hour = f"cross {3600 * len(rows) / total_c:.0f}, emulated {3600 * len(rows) / total_e:.0f}"
        print(f"wheels per hour: {per_hour} ({total_e / total_c:.1f}x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for place in places:
            shutil.rmtree(place, ignore_errors=True)


if __name__ == "__main__":
    main()
