"""ccache hits on a rebuild whatever drives the compiler: setuptools with C++, CMake (its
compiler launcher), and C++ that includes a header from the randomly named build environment,
with uv and with pip as the frontend; the hit rate is in the result and the log."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from piwheels_ctl import agent, frontend

from indexserver import IndexServer
from sdists import make_sdist
from wheels import make_wheel

PYTHON = "/usr/bin/python3"
PYPROJECT = (
    '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n\n'
    '[project]\nname = "{name}"\nversion = "1.0"\n'
)
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
    project = tmp_path / name
    project.mkdir()
    pyproject = PYPROJECT.format(name=name)
    source = MODULE_CPP.format(module=module)
    if kind == "envhdr":
        pyproject = pyproject.replace('"setuptools>=61"', '"setuptools>=61", "envhdr"')
        source = '#include "envhdr.h"\n' + source.replace('("hello from C++")', "(envhdr_text())")
    (project / "pyproject.toml").write_text(pyproject)
    (project / f"{module}.cpp").write_text(source)
    if kind == "envhdr":
        (project / "setup.py").write_text(HEADER_SETUP)
    elif kind == "cmake":
        (project / "setup.py").write_text(CMAKE_SETUP)
        (project / "CMakeLists.txt").write_text(CMAKELISTS)
    else:
        (project / "setup.py").write_text(CPP_SETUP)
    return make_sdist(project, tmp_path / "sdists")


def _build(
    sdist: Path, tmp_path: Path, index: IndexServer, front: str | None, tag: str
) -> tuple[dict[str, Any], str]:
    name = sdist.name[: -len(".tar.gz")].rsplit("-", 1)[0].replace("_", "-")
    log = tmp_path / f"{tag}.log"
    result = agent.build(
        PYTHON, name, "1.0", str(tmp_path / f"outbox-{tag}"), str(log), str(tmp_path / "work"),
        index_url=index.url, sdist_url=sdist.as_uri(),
        sdist_sha256=hashlib.sha256(sdist.read_bytes()).hexdigest(), frontend=front,
        ccache_dir=str(tmp_path / "ccache"), deps_cache=str(tmp_path / "deps"), deps_cache_mb=500,
    )  # fmt: skip
    return result, log.read_text()


@pytest.mark.build
@pytest.mark.parametrize("kind", ["cpp", "cmake", "envhdr"])
@pytest.mark.parametrize("front", ["uv", "pip"])
def test_a_rebuild_hits_the_compiler_cache(kind: str, front: str, build_deps: Path, tmp_path: Path) -> None:
    if not shutil.which("ccache"):
        pytest.skip("ccache is not installed (apt-get install ccache)")
    if kind == "cmake" and not shutil.which("cmake"):
        pytest.skip("cmake is not installed (apt-get install cmake; .ci/setup does)")
    wheel = None
    if front == "uv":
        found = sorted(build_deps.glob(f"uv-{frontend.UV_VERSION}-*_{os.uname().machine}.whl"))
        assert found, f"no uv wheel in {build_deps}"
        (tmp_path / "frontends").mkdir()
        wheel = str(shutil.copy(found[0], tmp_path / "frontends"))
    sdist = _sdist(tmp_path, kind)
    links = tmp_path / "index"
    shutil.copytree(build_deps, links)
    make_wheel(links, "envhdr", "1.0", extra={"envhdr/__init__.py": ENVHDR_INIT,
                                              "envhdr/include/envhdr.h": ENVHDR_H})  # fmt: skip
    with IndexServer(links) as index:
        cold, cold_log = _build(sdist, tmp_path, index, wheel, "cold")
        warm, warm_log = _build(sdist, tmp_path, index, wheel, "warm")
    assert cold["status"] == "success", cold_log[-3000:]
    assert warm["status"] == "success", warm_log[-3000:]
    assert cold["ccache"]["misses"] >= 1, (cold["ccache"], cold_log[-3000:])
    assert warm["ccache"] == {"hits": cold["ccache"]["misses"], "misses": 0}, (
        warm["ccache"],
        warm_log[-3000:],
    )
    assert f"ccache: {warm['ccache']['hits']} hits, 0 misses (100%)" in warm_log
