"""The build step on its own: time limit on the whole process group, memory limit, log cap, old Pythons."""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from piwheels_ctl.agent import agent, buildstep, jobspec, outbox, sdistfetch
from piwheels_ctl.agent.jobspec import request
from piwheels_ctl.errors import ConfigError
from piwheels_ctl.farm import agentcall, registry

from helpers import debian_venv

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
    result = buildstep.build(request(
        str(script), "demo", "1.0", str(tmp_path / "outbox"), str(tmp_path / "build.log"), str(work),
    ))  # fmt: skip
    log = (tmp_path / "build.log").read_text()
    assert result["status"] == "failed", result
    assert re.search(rf"HOME={work}/build-\w+/build/home TMPDIR={work}/build-\w+/build/tmp", log), log
    assert list(work.glob("build-*")) == [], "the throwaway folder is gone"


def test_too_little_disk_is_the_builders_fault(tmp_path: Path) -> None:
    result = buildstep.build(request(
        sys.executable, "demo", "1.0", str(tmp_path / "outbox"), str(tmp_path / "build.log"),
        str(tmp_path / "work"), min_free_mb=10**9,
    ))  # fmt: skip
    assert result["status"] == "error" and "disk full" in str(result["error"])


def test_names_that_a_shell_or_a_path_could_misread_are_refused(tmp_path: Path) -> None:
    for name, version in [("../../etc", "1.0"), ("demo", "1.0; rm -rf /"), ("-rf", "1")]:
        result = buildstep.build(
            request(
                sys.executable,
                name,
                version,
                str(tmp_path / "outbox"),
                str(tmp_path / "log"),
                str(tmp_path / "w"),
            )
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
    result = buildstep.build(request(
        sys.executable, "demo", "1.0", outbox, log, str(tmp_path / "w"),
        sdist_url=sdist.as_uri(), sdist_sha256=wrong,
    ))  # fmt: skip
    assert result["status"] == "failed" and wrong in str(result["download_error"]), result


def test_an_sdist_that_cannot_be_fetched_is_the_builders_fault(tmp_path: Path) -> None:
    outbox, log = str(tmp_path / "outbox"), str(tmp_path / "log")
    result = buildstep.build(request(
        sys.executable, "demo", "1.0", outbox, log, str(tmp_path / "w"),
        sdist_url=(tmp_path / "gone-1.0.tar.gz").as_uri(), sdist_sha256="0" * 64,
    ))  # fmt: skip
    assert result["status"] == "error" and "download" in str(result["error"]), result


def test_the_build_runs_the_pinned_pip_not_the_interpreters_own(tmp_path: Path) -> None:
    # A stand-in for the pinned pip's wheel (piwheels_ctl.farm.frontend): its `python -m pip` says so.
    wheel = tmp_path / "frontends" / "pip-0-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("pip/__init__.py", "")
        archive.writestr("pip/__main__.py", "import sys\nprint('PINNED-PIP', sys.argv[1:])\nsys.exit(1)\n")
    outbox, log = str(tmp_path / "outbox"), tmp_path / "build.log"
    result = buildstep.build(
        request("/usr/bin/python3", "demo", "1.0", outbox, str(log), str(tmp_path / "w"), frontend=str(wheel))
    )
    text = log.read_text()
    assert result["status"] == "failed" and "PINNED-PIP" in text and "--use-pep517" in text, text


@pytest.mark.parametrize("url", ["ftp://files.example/demo-1.0.tar.gz", "jar:file:///x!/demo-1.0.tar.gz"])
def test_an_sdist_url_of_another_scheme_is_not_fetched(tmp_path: Path, url: str) -> None:
    with pytest.raises(sdistfetch.DownloadError, match="not an http"):
        sdistfetch.fetch_sdist(url, "0" * 64, str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_the_shipped_files_are_the_folder_and_each_runs_beside_the_others() -> None:
    """Every module of the folder is sent, none takes a stdlib module's name (the folder is
    ``sys.path[0]`` on a builder), and each imports the same siblings both ways."""
    folder = AGENT.parent
    shipped_files = sorted(p.name for p in folder.glob("*.py") if p.name != "__init__.py")
    assert list(agent.MODULES) == shipped_files
    assert [name for name in agent.MODULES if name[: -len(".py")] in sys.stdlib_module_names] == []
    siblings = {name[: -len(".py")] for name in agent.MODULES}
    for name in agent.MODULES:
        source = (folder / name).read_text()
        tree = ast.parse(source, feature_version=(3, 4))
        assert not any(isinstance(node, ast.JoinedStr) for node in ast.walk(tree)), name
        branches = [n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "__package__"]
        local = {a.name for b in branches for n in b.body if isinstance(n, ast.ImportFrom) for a in n.names}
        shipped = {a.name for b in branches for n in b.orelse if isinstance(n, ast.Import) for a in n.names}
        assert local == shipped and local <= siblings, name
        imports = [n for n in ast.walk(tree) if isinstance(n, ast.Import)]
        imported = {a.name.split(".")[0] for n in imports for a in n.names}
        assert imported - siblings <= sys.stdlib_module_names, (name, imported - siblings)


def test_a_request_reaches_the_agent_as_it_was_sent() -> None:
    assert jobspec.Request._fields == tuple(row[0] for row in jobspec.OPTIONS)
    sent = request(
        "/usr/bin/python3", "demo", "1.0", "/o", "/o/build.log", "/w", timeout=5.5, memory_mb=7,
        log_max_bytes=9, index_url="http://index/simple/", find_links=["/links", "http://links/"],
        ccache_dir="/c", min_free_mb=3, sandbox_kind="user", max_procs=40,
        sdist_url="http://files/demo-1.0.tar.gz", sdist_sha256="0" * 64, frontend="/f/uv-0.whl",
        deps_cache="/d", deps_cache_mb=11, ccache_remote="http://cache/",
        network_allow=["*.example.org", "files.example:8443"], farm_addresses=["192.0.2.1", "2001:db8::1"],
        repair_tools=["/r/auditwheel-6.1.0-py3-none-any.whl"], cross="armhf", max_load=1.5,
    )  # fmt: skip
    parser = argparse.ArgumentParser()
    jobspec.add_arguments(parser)
    assert jobspec.from_args(parser.parse_args(jobspec.to_argv(sent))) == sent
    bare = request("/usr/bin/python3", "demo", "1.0", "/o", "/o/build.log", "/w")
    assert jobspec.from_args(parser.parse_args(jobspec.to_argv(bare))) == bare._replace(
        find_links=[], network_allow=[], farm_addresses=[], repair_tools=[]
    )
    argv = agentcall.build_argv("/usr/bin/python3", "/home/pi/piwheels", "/var/lib/agent", sent)
    assert argv[:5] == ["sudo", "-n", "/usr/bin/python3", "/var/lib/agent/agent/agent.py", "build"]
    assert agentcall.runner_argv("/usr/bin/python3", "/r", None) == ["/usr/bin/python3", "/r/agent.py"]


def test_the_controller_reads_only_keys_the_agent_answers() -> None:
    answer = agentcall._BuildAnswer.__annotations__
    assert set(answer) <= set(jobspec.ANSWER_KEYS)
    assert set(agentcall._FileAnswer.__annotations__) <= set(jobspec.FILE_KEYS)
    assert set(agentcall._ElfAnswer.__annotations__) == set(jobspec.ELF_KEYS)
    assert set(agentcall._PlatformAnswer.__annotations__) == set(jobspec.PLATFORM_KEYS)
    assert set(outbox.builder_error("full")) <= set(jobspec.ANSWER_KEYS)
    assert set(agent.probe()) >= agentcall.PROBE_KEYS


def _probe(python: Path, kind: str) -> dict[str, object]:
    done = subprocess.run(
        [str(python), str(AGENT), "probe", "--sandbox", kind], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_an_interpreter_the_builds_uid_cannot_run_is_refused_and_the_builders_fault(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("builds get a uid of their own only from an agent running as root")
    # A pyenv-like Python in a private home (as /root is): the folders above that home are open.
    top = Path(tempfile.mkdtemp(prefix="piwheels-home-"))
    try:
        top.chmod(0o755)
        home = top / "home"
        home.mkdir()
        venv = home / "venv"
        python = debian_venv(venv, with_pip=False)
        home.chmod(0o700)
        # Without namespaces the build's uid meets the home's own mode on the way in.
        unreadable = str(_probe(python, "user").get("unreadable"))
        assert f"{home} is mode 700" in unreadable and "/usr/bin/python3" in unreadable, unreadable
        user_build = buildstep.build(request(
            str(python), "demo", "1.0", str(tmp_path / "outbox"), str(tmp_path / "build.log"),
            str(tmp_path / "work"), sandbox_kind="user",
        ))  # fmt: skip
        # "error": handed back as the builder's fault, never recorded against the project.
        assert user_build["status"] == "error" and f"{home} is mode 700" in str(user_build["error"]), (
            user_build
        )
        if shutil.which("bwrap") and str(_probe(sys.executable, "auto")["sandbox"]).startswith("bubblewrap"):
            # bubblewrap opens the folders above the interpreter's, not the interpreter's own.
            assert "unreadable" not in _probe(python, "bwrap")
            venv.chmod(0o700)
            assert f"{venv} is mode 700" in str(_probe(python, "bwrap").get("unreadable"))
        venv.chmod(0o700)
        with pytest.raises(
            ConfigError, match=r"builds' own uids cannot run it: .* is mode 700.*/usr/bin/python3"
        ):
            registry.probe_local(str(python))
        venv.chmod(0o755)
        home.chmod(0o755)
        assert "unreadable" not in _probe(python, "user")
    finally:
        shutil.rmtree(top)
