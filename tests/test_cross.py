"""Cross builds for real: the agent in the cached x86_64 bookworm root with Debian's cross
toolchains (tests/cross_roots.py) builds a C extension for armv7l and aarch64 in its sandbox;
each wheel's ELF headers say ARM, it passes the agent's load check (``--check-wheel``, the check
job's mode) under qemu-user in the bookworm root of its architecture (tests/arm_roots.py), and pip
installs and imports it there. uv, the farm's default frontend (run as the builder's own x86_64
program), cross-builds the same wheel as pip. A project that probes the machine in its build
fails on the cross builder and builds on the emulated one.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from piwheels_ctl.agent import agent as agent_module

from arm_roots import arm_root, why_no_arm_emulation
from cross_roots import cross_root
from debian_roots import run_in_root
from sdists import make_sdist, setuptools_project

pytestmark = pytest.mark.skipif(shutil.which("debootstrap") is None, reason="debootstrap is not installed")

AGENT = Path(agent_module.__file__).parent
C_SOURCE = """#include <Python.h>
static PyObject *triple(PyObject *self, PyObject *arg) {
    return PyLong_FromLong(3 * PyLong_AsLong(arg));
}
static PyMethodDef methods[] = {{"triple", triple, METH_O, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "crossext", NULL, -1, methods};
PyMODINIT_FUNC PyInit_crossext(void) { return PyModule_Create(&module); }
"""
SETUP = (
    'from setuptools import Extension, setup\nsetup(ext_modules=[Extension("crossext", ["crossext.c"])])\n'
)
# A build that asks the machine it runs on: on a cross builder it finds x86_64 and gives up.
PROBING_SETUP = (
    "import platform\nfrom setuptools import Extension, setup\n"
    "if not platform.machine().startswith(('arm', 'aarch64')):\n"
    "    raise SystemExit('this build needs an ARM board, found ' + platform.machine())\n"
    'setup(ext_modules=[Extension("probingext", ["probingext.c"])])\n'
)
MACHINES = {"armhf": ("linux_armv7l", 40), "arm64": ("linux_aarch64", 183)}
# The folders staged in the shared cached roots, removed when the module is done.
STAGED: list[Path] = []


@pytest.fixture(scope="module")
def roots() -> Iterator[dict[str, Path]]:
    """The cross root, and the bookworm root of each target (skipped where qemu cannot run it);
    the folders the tests staged in them are removed afterwards (the roots are shared)."""
    why = why_no_arm_emulation("armhf") or why_no_arm_emulation("arm64")
    if why:
        pytest.skip(why)
    yield {
        "cross": cross_root(),
        "armhf": arm_root("bookworm", "armhf"),
        "arm64": arm_root("bookworm", "arm64"),
    }
    for place in STAGED:
        shutil.rmtree(place, ignore_errors=True)


def _stage(root: Path, build_deps: Path, name: str) -> Path:
    """A fresh folder /tmp/<name> in ``root`` with the agent and the build requirements' wheels."""
    place = root / "tmp" / f"piwheels-test-{name}"
    shutil.rmtree(place, ignore_errors=True)
    STAGED.append(place)
    (place / "agent").mkdir(parents=True)
    for module in agent_module.MODULES:
        shutil.copy(AGENT / module, place / "agent" / module)
    shutil.copytree(build_deps, place / "deps")
    for folder, _dirs, files in os.walk(place):  # the build's own uid reads the wheels there
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)
    return place


def _agent(root: Path, place: Path, *args: str, timeout: float = 1800) -> dict:
    inside = "/" + str(place.relative_to(root))
    done = run_in_root(root, ["python3", f"{inside}/agent/agent.py", *args], timeout=timeout)
    assert done.returncode == 0, f"the agent in {root.name} failed:\n{done.stdout}\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.splitlines()[-1])


def _pinned_pip(place: Path) -> str:
    """The pinned pip among the build requirements (the targets' roots have no pip of their own)."""
    return sorted(p.name for p in (place / "deps").glob("pip-*-py3-none-any.whl"))[-1]


def _uv(place: Path) -> str:
    """The pinned uv for the cross root's own machine (a cross build's frontend runs there)."""
    return sorted(p.name for p in (place / "deps").glob(f"uv-*_{os.uname().machine}.whl"))[-1]


def _build(root: Path, place: Path, project: Path, *extra: str, frontend: str | None = None) -> dict:
    sdist = make_sdist(project, place)
    inside = "/" + str(place.relative_to(root))
    name = project.name
    return _agent(
        root, place, "build", "--python", "/usr/bin/python3", "--name", name, "--version", "1.0",
        "--outbox", f"{inside}/out", "--log", f"{inside}/out/build.log", "--work-root", f"{inside}/work",
        "--sdist-url", f"file://{inside}/{sdist.name}", "--find-links", f"{inside}/deps",
        "--frontend", f"{inside}/deps/{frontend or _pinned_pip(place)}", *extra,
    )  # fmt: skip


def test_probe_cross_answers_the_targets_tags_with_the_cross_mark(
    roots: dict[str, Path], build_deps: Path
) -> None:
    place = _stage(roots["cross"], build_deps, "probe")
    for target, (platform_tag, _) in MACHINES.items():
        probe = _agent(roots["cross"], place, "probe", "--cross", target)
        assert (probe["python_tag"], probe["abi_tag"], probe["platform_tag"]) == (
            "cp311",
            "cp311",
            platform_tag,
        ), probe
        assert probe["cross"]["target"] == target, probe
        assert probe["os"]["arch"] == "amd64", f"the builder's own OS is kept: {probe['os']}"


@pytest.mark.parametrize("target", ["armhf", "arm64"])
def test_a_cross_built_c_extension_loads_and_imports_on_its_target(
    roots: dict[str, Path], build_deps: Path, tmp_path: Path, target: str
) -> None:
    platform_tag, e_machine = MACHINES[target]
    cross = roots["cross"]
    place = _stage(cross, build_deps, f"cross-{target}")
    project = setuptools_project(tmp_path, "crossext", {"setup.py": SETUP, "crossext.c": C_SOURCE})
    result = _build(cross, place, project, "--cross", target)
    log = (place / "out" / "build.log").read_text(errors="replace")
    assert result["status"] == "success", f"cross build for {target}: {result}\n{log[-3000:]}"
    assert result["cross"] == {"target": target, "triplet": result["cross"]["triplet"]}, result
    [wheel] = result["files"]
    assert wheel["name"] == f"crossext-1.0-cp311-cp311-{platform_tag}.whl", wheel
    assert wheel["elf"] == [{"machine": e_machine, "class": 32 if target == "armhf" else 64}], wheel
    members = zipfile.ZipFile(place / "out" / wheel["name"]).namelist()
    suffix = "arm-linux-gnueabihf" if target == "armhf" else "aarch64-linux-gnu"
    assert f"crossext.cpython-311-{suffix}.so" in members, members

    # The check job's mode on the target, under qemu-user: every compiled module loads.
    native = roots[target]
    check = _stage(native, build_deps, f"check-{target}")
    shutil.copy(place / "out" / wheel["name"], check / wheel["name"])
    inside = "/" + str(check.relative_to(native))
    checked = _agent(
        native, check, "build", "--python", "/usr/bin/python3", "--name", "crossext", "--version", "1.0",
        "--outbox", f"{inside}/out", "--log", f"{inside}/check.log", "--work-root", f"{inside}/work",
        "--check-wheel", f"{inside}/{wheel['name']}",
    )  # fmt: skip
    assert checked["load_check"]["ok"], f"the load check on {target}: {checked}"
    script = (
        f"python3 -m venv {inside}/venv && {inside}/venv/bin/pip install --no-index {inside}/{wheel['name']} "
        f"&& {inside}/venv/bin/python -c 'import crossext; print(crossext.triple(14))'"
    )
    done = run_in_root(native, ["sh", "-c", script], timeout=1800)
    assert done.returncode == 0 and done.stdout.strip().endswith("42"), (
        f"pip on {target}:\n{done.stdout}{done.stderr}"
    )


def test_a_build_that_probes_the_machine_fails_cross_and_builds_emulated(
    roots: dict[str, Path], build_deps: Path, tmp_path: Path
) -> None:
    project = setuptools_project(
        tmp_path,
        "probingext",
        {"setup.py": PROBING_SETUP, "probingext.c": C_SOURCE.replace("crossext", "probingext")},
    )
    place = _stage(roots["cross"], build_deps, "probing-cross")
    refused = _build(roots["cross"], place, project, "--cross", "armhf")
    log = (place / "out" / "build.log").read_text(errors="replace")
    assert refused["status"] == "failed" and not refused["files"], f"the cross builder built it: {refused}"
    assert "needs an ARM board, found x86_64" in log, log[-2000:]
    emulated = _stage(roots["armhf"], build_deps, "probing-native")
    built = _build(roots["armhf"], emulated, project)
    assert built["status"] == "success", f"the emulated builder: {built}"
    assert [f["name"] for f in built["files"]] == ["probingext-1.0-cp311-cp311-linux_armv7l.whl"], built


@pytest.mark.parametrize("target", ["armhf", "arm64"])
def test_uv_cross_builds_the_same_wheel_as_pip(
    roots: dict[str, Path], build_deps: Path, tmp_path: Path, target: str
) -> None:
    """uv (the farm's default frontend, run as the builder's own x86_64 program) passes the cross
    environment to the backend: the wheel has the target's tags, ELF machine and extension
    suffix, and the same members as pip's build of the same sdist."""
    platform_tag, e_machine = MACHINES[target]
    project = setuptools_project(tmp_path, "crossext", {"setup.py": SETUP, "crossext.c": C_SOURCE})
    members = {}
    for frontend in ("uv", "pip"):
        place = _stage(roots["cross"], build_deps, f"{frontend}-{target}")
        wheel = _uv(place) if frontend == "uv" else None
        result = _build(roots["cross"], place, project, "--cross", target, frontend=wheel)
        log = (place / "out" / "build.log").read_text(errors="replace")
        assert result["status"] == "success", f"{frontend} cross build for {target}: {result}\n{log[-3000:]}"
        [built] = result["files"]
        assert built["name"] == f"crossext-1.0-cp311-cp311-{platform_tag}.whl", built
        assert [e["machine"] for e in built["elf"]] == [e_machine], built
        if frontend == "uv":
            assert "uv build --wheel" in log, log[:2000]
        members[frontend] = sorted(zipfile.ZipFile(place / "out" / built["name"]).namelist())
    assert members["uv"] == members["pip"], members
