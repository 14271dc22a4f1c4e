"""A builder's interpreter named by a path through ``..`` or a symlink the sandbox does not show
(a private folder, a folder under /tmp): builds run it by its real path on the builder, the
probe says that path, and an interpreter that cannot be run is the builder's fault, never a
project's. Real uv builds in the sandbox, the agent's real probe."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from piwheels_ctl.agent import agent, buildstep
from piwheels_ctl.agent.jobspec import request
from piwheels_ctl.farm import frontend

from indexserver import IndexServer

PYTHON = "/usr/bin/python3"


def _through_dotdot(tmp_path: Path) -> str:
    """PYTHON named through a folder and back up to / (a folder the sandbox does not show: it
    shows the build's folders, and above them only the empty folders that lead there)."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return str(folder) + "/.." * len(folder.parts[1:]) + PYTHON


def _private_link(tmp_path: Path) -> str:
    """PYTHON named by a symlink in a folder only root may enter."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "python3").symlink_to(PYTHON)
    return str(private / "python3")


@pytest.mark.build
@pytest.mark.parametrize("named", ["dotdot", "private-link"])
def test_a_build_runs_the_interpreter_by_its_real_path(
    named: str, fixture_sdists: dict[str, Path], build_deps: Path, tmp_path: Path
) -> None:
    found = sorted(build_deps.glob(f"uv-{frontend.UV_VERSION}-*_{os.uname().machine}.whl"))
    if not found:
        pytest.skip(f"no uv {frontend.UV_VERSION} for this machine")
    wheel = tmp_path / "frontends" / found[0].name
    wheel.parent.mkdir()
    shutil.copyfile(found[0], wheel)
    python = _through_dotdot(tmp_path) if named == "dotdot" else _private_link(tmp_path)
    sdist = fixture_sdists["c-ext"]
    log = tmp_path / "build.log"
    with IndexServer(build_deps) as index:
        result = buildstep.build(request(
            python, "c-ext", "1.0", str(tmp_path / "outbox"), str(log), str(tmp_path / "work"),
            index_url=index.url, sdist_url=sdist.as_uri(), frontend=str(wheel),
            sdist_sha256=hashlib.sha256(sdist.read_bytes()).hexdigest(),
        ))  # fmt: skip
    said = log.read_text()[-3000:] if log.exists() else "no log"
    assert result["status"] == "success", (python, result, said)
    assert f"--python {os.path.realpath(PYTHON)} " in log.read_text(), said


def test_an_interpreter_that_is_not_there_is_the_builders_fault(tmp_path: Path) -> None:
    python = str(tmp_path / "gone" / ".." / "bin" / "python3")
    result = buildstep.build(request(
        python, "demo", "1.0", str(tmp_path / "outbox"), str(tmp_path / "build.log"), str(tmp_path / "work"),
    ))  # fmt: skip
    assert result["status"] == "error", result
    assert result["error"] == f"cannot run the interpreter {tmp_path}/bin/python3: no such program here", (
        result
    )


def test_the_probe_says_the_path_builds_run(tmp_path: Path) -> None:
    for python in (_through_dotdot(tmp_path), _private_link(tmp_path)):
        done = subprocess.run(
            [python, str(Path(agent.__file__)), "probe"], capture_output=True, text=True, timeout=300,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        probe = json.loads(done.stdout.splitlines()[-1])
        assert probe["python"] == os.path.realpath(PYTHON), (python, probe)
        assert "unreadable" not in probe, probe
