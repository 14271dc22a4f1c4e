"""uv as the build frontend: real uv builds in the sandbox give the wheels and the failure
reasons pip's give, and a project's second build fetches no build requirement again."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from piwheels_ctl.agent import buildstep, depscache, requirespython
from piwheels_ctl.agent.jobspec import request
from piwheels_ctl.config import Settings
from piwheels_ctl.failures.classify import Failure, classify
from piwheels_ctl.farm import frontend

from indexserver import IndexServer
from sdists import make_sdist, setuptools_project

PYTHON = "/usr/bin/python3"


@pytest.fixture
def uv_wheel(build_deps: Path, tmp_path: Path) -> Path:
    """The pinned uv's wheel for this machine, in a folder of the test's own (it unpacks beside it)."""
    found = sorted(build_deps.glob(f"uv-{frontend.UV_VERSION}-*_{os.uname().machine}.whl"))
    assert found, f"no uv {frontend.UV_VERSION} wheel in {sorted(p.name for p in build_deps.iterdir())}"
    target = tmp_path / "frontends" / found[0].name
    target.parent.mkdir()
    shutil.copyfile(found[0], target)
    return target


def _build(
    sdist: Path, tmp_path: Path, index: IndexServer, front: Path | None, tag: str, **options: Any
) -> tuple[dict[str, Any], str]:
    """Build ``sdist`` as the local builder would, with ``front`` (None: the interpreter's pip)."""
    name, version = sdist.name[: -len(".tar.gz")].rsplit("-", 1)
    log = tmp_path / f"{tag}.log"
    result = buildstep.build(request(
        PYTHON, name.replace("_", "-"), version, str(tmp_path / f"outbox-{tag}"), str(log),
        str(tmp_path / "work"), index_url=index.url, sdist_url=sdist.as_uri(),
        sdist_sha256=hashlib.sha256(sdist.read_bytes()).hexdigest(), frontend=str(front) if front else None,
        **options,
    ))  # fmt: skip
    return result, log.read_text()


def test_the_frontend_is_uv_for_python_3_8_and_later_and_pip_before(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert str(frontend.choose(settings, "cp311-cp311-linux_armv7l")) == f"uv {frontend.UV_VERSION}"
    assert str(frontend.choose(settings, "cp38-cp38-linux_armv6l")) == f"uv {frontend.UV_VERSION}"
    assert str(frontend.choose(settings, "cp37-cp37m-linux_armv7l")) == "pip 24.0"
    assert str(frontend.choose(settings, "cp27-cp27mu-linux_armv7l")) == "pip 20.3.4"
    assert frontend.choose(settings, "cp311-cp311-linux_sparc64").kind == "pip"  # no uv for it
    assert frontend.choose(settings, "cp311-cp311-linux_x86_64", has_sdist=False).kind == "pip"
    assert (
        frontend.choose(settings.model_copy(update={"frontend": "pip"}), "cp311-cp311-linux_x86_64").kind
        == "pip"
    )


def test_the_controller_fetches_uv_for_the_builders_platform(build_deps: Path, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with IndexServer(build_deps) as index:
        wheel = frontend.wheel(settings, "cp311-cp311-linux_x86_64", index.url, [])
        again = frontend.wheel(settings, "cp311-cp311-linux_x86_64", index.url, [])
        fetched = [r for r in index.requests if r[1].startswith("/files/uv-")]
    assert wheel == again and wheel.parent == tmp_path.resolve() / "frontends", wheel
    assert wheel.name.startswith(f"uv-{frontend.UV_VERSION}-") and wheel.name.endswith("_x86_64.whl"), wheel
    assert len(fetched) == 1, f"fetched once, then kept: {fetched}"


@pytest.mark.build
def test_uv_and_pip_build_the_same_wheel(
    fixture_sdists: dict[str, Path], build_deps: Path, uv_wheel: Path, tmp_path: Path
) -> None:
    with IndexServer(build_deps) as index:
        by_uv, uv_log = _build(fixture_sdists["c-ext"], tmp_path, index, uv_wheel, "uv")
        by_pip, pip_log = _build(fixture_sdists["c-ext"], tmp_path, index, None, "pip")
    assert by_uv["status"] == "success", uv_log
    assert by_pip["status"] == "success", pip_log
    assert "uv build --wheel" in uv_log.splitlines()[0].replace(str(uv_wheel)[:-4], "uv"), uv_log[:300]
    names = [f["name"] for f in by_uv["files"]], [f["name"] for f in by_pip["files"]]
    assert names[0] == names[1] and len(names[0]) == 1, names


@pytest.mark.build
@pytest.mark.parametrize(
    ("project", "expected"),
    [
        ("fails-header", Failure("missing-header", "no_such_header_xyz.h")),
        ("py2-only", Failure("python2-only", None)),
    ],
)
def test_uvs_failures_have_pips_reasons(
    project: str, expected: Failure, fixture_sdists: dict[str, Path], build_deps: Path, uv_wheel: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    with IndexServer(build_deps) as index:
        result, log = _build(fixture_sdists[project], tmp_path, index, uv_wheel, "uv")
    assert result["status"] == "failed", log
    assert classify(log) == expected, log[-2000:]


@pytest.mark.build
def test_a_build_requirement_missing_from_the_index_is_named(
    build_deps: Path, uv_wheel: Path, tmp_path: Path
) -> None:
    project = setuptools_project(tmp_path, "needs-missing", requires=["no-such-builder>=2"])
    sdist = make_sdist(project, tmp_path / "sdists")
    with IndexServer(build_deps) as index:
        result, log = _build(sdist, tmp_path, index, uv_wheel, "uv")
    assert result["status"] == "failed", log
    assert classify(log) == Failure("build-dependency-unresolved", "no-such-builder>=2"), log[-2000:]


@pytest.mark.build
def test_a_projects_second_build_downloads_no_build_requirement(
    fixture_sdists: dict[str, Path], build_deps: Path, uv_wheel: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "deps-cache"
    with IndexServer(build_deps) as index:
        first, log = _build(fixture_sdists["c-ext"], tmp_path, index, uv_wheel, "first",
                            deps_cache=str(cache), deps_cache_mb=100)  # fmt: skip
        assert first["status"] == "success", log
        fetched_first = [r for r in index.requests if r[1].startswith("/files/")]
        index.requests.clear()
        second, log = _build(fixture_sdists["c-ext"], tmp_path, index, uv_wheel, "second",
                             deps_cache=str(cache), deps_cache_mb=100)  # fmt: skip
        assert second["status"] == "success", log
        fetched_second = [r for r in index.requests if r[1].startswith("/files/")]
    assert any("setuptools" in r[1] for r in fetched_first), fetched_first
    assert fetched_second == [], f"the second build fetched {fetched_second}"
    assert (cache / "projects" / "c-ext").is_dir()


def test_the_caches_are_pruned_to_their_size_longest_unused_first(tmp_path: Path) -> None:
    projects = tmp_path / "projects"
    for age, name in enumerate(["newest", "middle", "oldest"]):
        (projects / name).mkdir(parents=True)
        (projects / name / "wheel.whl").write_bytes(b"x" * 600 * 1024)
        lock = projects / f"{name}.lock"
        lock.touch()
        stamp = 1_700_000_000 - age * 1000
        os.utime(lock, (stamp, stamp))
    removed = depscache.prune(str(tmp_path), 1)
    assert removed == ["oldest", "middle"], removed
    assert (projects / "newest" / "wheel.whl").exists() and not any((projects / "oldest").iterdir())


@pytest.mark.build
def test_uv_refuses_what_pip_refuses_for_its_requires_python(
    build_deps: Path, uv_wheel: Path, tmp_path: Path
) -> None:
    project = setuptools_project(tmp_path, "old-only", {"old_only.py": ""}, tables='requires-python = "<3"\n')
    sdist = make_sdist(project, tmp_path / "sdists")
    with IndexServer(build_deps) as index:
        result, log = _build(sdist, tmp_path, index, uv_wheel, "uv")
    assert result["status"] == "failed" and result["files"] == [], result
    assert classify(log) == Failure("unsupported-python", "<3"), log[-1000:]


@pytest.mark.parametrize(
    ("specifier", "version", "allowed"),
    [
        (">=3.8", "3.11.2", True),
        ("<3", "3.11.2", False),
        (">=3.8, !=3.11.*", "3.11.2", False),
        ("==3.11.*", "3.11.2", True),
        ("~=3.9", "3.11.2", True),
        ("~=3.9.1", "3.11.2", False),
        (">3.11", "3.11.0", False),
        ("<=3.11", "3.11.0", True),
    ],
)
def test_requires_python_is_read_as_pip_reads_it(specifier: str, version: str, allowed: bool) -> None:
    assert requirespython.specifier_allows(specifier, version) is allowed


POISONER_SETUP = """\
import os

from setuptools import setup

victim = {victim!r}
for attempt in ("write", "list"):
    try:
        if attempt == "write":
            with open(os.path.join(victim, "setuptools-99-py3-none-any.whl"), "w") as f:
                f.write("doctored")
        else:
            os.listdir(victim)
        print("POISONER: could", attempt, victim)
    except OSError as exc:
        print("POISONER: could not", attempt, victim, type(exc).__name__)
setup()
"""


@pytest.mark.build
def test_a_build_cannot_reach_another_projects_cache_of_build_requirements(
    fixture_sdists: dict[str, Path], build_deps: Path, uv_wheel: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "deps-cache"
    victim = cache / "projects" / "c-ext"
    project = setuptools_project(
        tmp_path, "poisoner", {"setup.py": POISONER_SETUP.format(victim=str(victim))}
    )
    sdist = make_sdist(project, tmp_path / "sdists")
    with IndexServer(build_deps) as index:
        first, log = _build(fixture_sdists["c-ext"], tmp_path, index, uv_wheel, "victim",
                            deps_cache=str(cache), deps_cache_mb=100)  # fmt: skip
        assert first["status"] == "success", log
        before = sorted(str(p.relative_to(victim)) for p in victim.rglob("*"))
        result, log = _build(sdist, tmp_path, index, uv_wheel, "poisoner", deps_cache=str(cache),
                             deps_cache_mb=100)  # fmt: skip
    assert result["status"] == "success", log[-2000:]
    assert "POISONER: could not write" in log and "POISONER: could not list" in log, log[-2000:]
    assert sorted(str(p.relative_to(victim)) for p in victim.rglob("*")) == before


@pytest.mark.build
def test_the_backends_second_start_reads_the_bytecode_its_first_wrote(
    build_deps: Path, uv_wheel: Path, tmp_path: Path
) -> None:
    # Each start of the backend says when setuptools' bytecode was written, if it was.
    setup = (
        "import importlib.util, os, setuptools\n"
        "pyc = importlib.util.cache_from_source(setuptools.__file__)\n"
        "print('setuptools bytecode:', os.stat(pyc).st_mtime_ns if os.path.exists(pyc) else None)\n"
        "setuptools.setup(py_modules=[])\n"
    )
    sdist = make_sdist(
        setuptools_project(tmp_path, "says-bytecode", {"setup.py": setup}), tmp_path / "sdists"
    )
    with IndexServer(build_deps) as index:
        result, log = _build(sdist, tmp_path, index, uv_wheel, "uv")
    assert result["status"] == "success", log
    # uv starts the backend for the build requirements, then for the wheel, in one environment:
    # the first start writes the bytecode, the second reads it (and so does not write it again).
    said = [line.split(":", 1)[1].strip() for line in log.splitlines() if line.startswith("setuptools byte")]
    assert len(said) == 2 and said[0] == said[1] != "None", said


def test_a_wheel_the_requires_python_check_cannot_read_is_left_to_the_controller(tmp_path: Path) -> None:
    """What the build left is read after the agent's checks, and never trusted: a file that is
    not a zip, or whose METADATA is too big to read, gives no refusal and no error."""
    garbage = tmp_path / "garbage-1.0-py3-none-any.whl"
    garbage.write_bytes(b"<html>not a zip</html>")
    bomb = tmp_path / "bomb-1.0-py3-none-any.whl"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb-1.0.dist-info/METADATA", "Requires-Python: <3\n" + " " * (2 << 20))
    old = tmp_path / "old_only-1.0-py3-none-any.whl"
    with zipfile.ZipFile(old, "w") as archive:
        archive.writestr("old_only-1.0.dist-info/METADATA", "Name: old-only\nRequires-Python: <3\n")
    python = sys.executable
    assert requirespython.refusal(python, [str(garbage), str(bomb)]) is None
    refused = requirespython.refusal(python, [str(garbage), str(bomb), str(old)])
    assert refused is not None and "'old-only' requires a different Python" in refused, refused
