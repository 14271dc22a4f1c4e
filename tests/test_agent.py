"""The build step on its own: time limit on the whole process group, memory limit, log cap, old Pythons."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

from piwheels_ctl import agent
from piwheels_ctl.classifier import classify

AGENT = Path(agent.__file__)


def _fake_python(tmp_path: Path, body: str) -> str:
    """An "interpreter" whose `-m pip wheel` runs ``body`` (a shell script) instead."""
    script = tmp_path / "fake-python"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return str(script)


def _alive(pid: int) -> bool:
    """True if ``pid`` runs (a killed process not yet reaped by init is a zombie: dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _build(tmp_path: Path, python: str, **kwargs: object) -> dict[str, object]:
    return agent.build(
        python, "demo", "1.0", str(tmp_path / "outbox"), str(tmp_path / "build.log"), str(tmp_path / "work"),
        **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip


def test_time_limit_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    python = _fake_python(tmp_path, f"sleep 1000 & echo $! > {pidfile}\nwait")
    result = _build(tmp_path, python, timeout=1.0)
    assert result["timed_out"] is True and result["status"] == "failed"
    assert not _alive(int(pidfile.read_text()))
    assert classify((tmp_path / "build.log").read_text(), timed_out=True).reason == "timeout"


def test_memory_limit_stops_a_greedy_build(tmp_path: Path) -> None:
    python = _fake_python(tmp_path, f'exec {sys.executable} -c "x = bytearray(2 * 1024**3)"')
    result = _build(tmp_path, python, memory_mb=512)
    assert result["status"] == "failed"
    assert classify((tmp_path / "build.log").read_text()).reason == "out-of-memory"


def test_log_is_capped_keeping_head_and_tail(tmp_path: Path) -> None:
    python = _fake_python(
        tmp_path, "echo FIRST-LINE; head -c 3000000 /dev/zero | tr '\\0' x; echo; echo LAST-LINE"
    )
    _build(tmp_path, python, log_max_bytes=10_000)
    log = (tmp_path / "build.log").read_text()
    assert len(log) < 10_200
    assert "FIRST-LINE" in log and "LAST-LINE" in log and "bytes cut by piwheels-ctl" in log


def test_builds_get_a_throwaway_home_and_tmpdir(tmp_path: Path) -> None:
    python = _fake_python(tmp_path, 'echo "HOME=$HOME TMPDIR=$TMPDIR"; touch "$HOME/.bashrc"; exit 1')
    _build(tmp_path, python)
    log = (tmp_path / "build.log").read_text()
    assert f"HOME={tmp_path / 'work'}" in log and "/home TMPDIR=" in log
    assert list((tmp_path / "work").iterdir()) == []  # the throwaway folder is gone


def test_too_little_disk_is_the_builders_fault(tmp_path: Path) -> None:
    result = _build(tmp_path, _fake_python(tmp_path, "exit 0"), min_free_mb=10**9)
    assert result["status"] == "error" and "disk full" in str(result["error"])


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
