"""The build step on its own: time limit on the whole process group, memory limit, log cap, old Pythons."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from piwheels_ctl.agent import agent, sdistfetch

AGENT = Path(agent.__file__)


def test_builds_get_a_throwaway_home_and_tmpdir(tmp_path: Path) -> None:
    script = tmp_path / "fake" / "bin" / "python"  # a fake interpreter: `-m pip wheel` runs this
    script.parent.mkdir(parents=True)
    script.write_text(
        '#!/bin/sh\n[ "$1" = "-m" ] || exec /usr/bin/python3 "$@"\n'  # the sandbox's relay: a real Python
        'echo "HOME=$HOME TMPDIR=$TMPDIR"; touch "$HOME/.bashrc"; exit 1\n'
    )
    script.chmod(0o755)
    work = tmp_path / "work"
    result = agent.build(
        str(script), "demo", "1.0", str(tmp_path / "outbox"), str(tmp_path / "build.log"), str(work),
    )  # fmt: skip
    log = (tmp_path / "build.log").read_text()
    assert result["status"] == "failed", result
    assert re.search(rf"HOME={work}/build-\w+/build/home TMPDIR={work}/build-\w+/build/tmp", log), log
    assert list(work.glob("build-*")) == [], "the throwaway folder is gone"


def test_too_little_disk_is_the_builders_fault(tmp_path: Path) -> None:
    result = agent.build(
        sys.executable, "demo", "1.0", str(tmp_path / "outbox"), str(tmp_path / "build.log"),
        str(tmp_path / "work"), min_free_mb=10**9,
    )  # fmt: skip
    assert result["status"] == "error" and "disk full" in str(result["error"])


def test_names_that_a_shell_or_a_path_could_misread_are_refused(tmp_path: Path) -> None:
    for name, version in [("../../etc", "1.0"), ("demo", "1.0; rm -rf /"), ("-rf", "1")]:
        result = agent.build(
            sys.executable,
            name,
            version,
            str(tmp_path / "outbox"),
            str(tmp_path / "log"),
            str(tmp_path / "w"),
        )
        assert result["status"] == "error" and "refused" in str(result["error"]), (name, version, result)


def test_agent_source_parses_as_python_3_4_and_has_no_f_strings() -> None:
    source = AGENT.read_text()
    tree = ast.parse(source, feature_version=(3, 4))
    assert not any(isinstance(node, ast.JoinedStr) for node in ast.walk(tree))
    assert "from __future__ import absolute_import, division, print_function" in source


def test_agent_runs_on_another_interpreter() -> None:
    pypy = shutil.which("pypy3")
    assert pypy, "Debian's pypy3 is needed"
    probe = json.loads(subprocess.run([pypy, str(AGENT), "probe"], capture_output=True, check=True).stdout)
    assert probe["implementation"] == "PyPy" and probe["python_tag"].startswith("pp3")


def test_an_sdist_that_is_not_what_the_index_says_is_a_download_failure(tmp_path: Path) -> None:
    sdist = tmp_path / "demo-1.0.tar.gz"
    sdist.write_bytes(b"not the bytes the index described")
    wrong = "0" * 64
    outbox, log = str(tmp_path / "outbox"), str(tmp_path / "log")
    result = agent.build(
        sys.executable, "demo", "1.0", outbox, log, str(tmp_path / "w"),
        sdist_url=sdist.as_uri(), sdist_sha256=wrong,
    )  # fmt: skip
    assert result["status"] == "failed" and wrong in str(result["download_error"]), result


def test_an_sdist_that_cannot_be_fetched_is_the_builders_fault(tmp_path: Path) -> None:
    outbox, log = str(tmp_path / "outbox"), str(tmp_path / "log")
    result = agent.build(
        sys.executable, "demo", "1.0", outbox, log, str(tmp_path / "w"),
        sdist_url=(tmp_path / "gone-1.0.tar.gz").as_uri(), sdist_sha256="0" * 64,
    )  # fmt: skip
    assert result["status"] == "error" and "download" in str(result["error"]), result


def test_the_build_runs_the_pinned_pip_not_the_interpreters_own(tmp_path: Path) -> None:
    # A stand-in for the pinned pip's wheel (piwheels_ctl.farm.frontend): its `python -m pip` says so.
    wheel = tmp_path / "frontends" / "pip-0-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("pip/__init__.py", "")
        archive.writestr("pip/__main__.py", "import sys\nprint('PINNED-PIP', sys.argv[1:])\nsys.exit(1)\n")
    outbox, log = str(tmp_path / "outbox"), tmp_path / "build.log"
    result = agent.build(
        "/usr/bin/python3", "demo", "1.0", outbox, str(log), str(tmp_path / "w"), frontend=str(wheel)
    )
    text = log.read_text()
    assert result["status"] == "failed" and "PINNED-PIP" in text and "--use-pep517" in text, text


@pytest.mark.parametrize("url", ["ftp://files.example/demo-1.0.tar.gz", "jar:file:///x!/demo-1.0.tar.gz"])
def test_an_sdist_url_of_another_scheme_is_not_fetched(tmp_path: Path, url: str) -> None:
    with pytest.raises(sdistfetch.DownloadError, match="not an http"):
        sdistfetch.fetch_sdist(url, "0" * 64, str(tmp_path))
    assert list(tmp_path.iterdir()) == []
