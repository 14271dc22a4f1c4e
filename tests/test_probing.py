"""``builders add`` / ``check`` probing on a real SSH builder (sshd on a loopback address):
every interpreter builds a tiny C extension with its frontend (uv or the pinned pip), and one
that cannot is reported and not used."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from piwheels_ctl.config import Settings
from piwheels_ctl.farm import frontend
from piwheels_ctl.farm.agentcall import BuilderError
from piwheels_ctl.farm.probing import probe_remote, probe_sdist

from indexserver import IndexServer
from sshd import SshHost, start_ssh_host

ADDRESS = "127.0.1.21"  # this file's own loopback address


@pytest.fixture(scope="module")
def host() -> Iterator[SshHost]:
    root = Path(tempfile.mkdtemp(prefix="piwheels-probing-"))
    ssh_host = start_ssh_host(root, ADDRESS, "pwprobe")
    try:
        yield ssh_host
    finally:
        ssh_host.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def settings(build_deps: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with IndexServer(build_deps) as index:
        yield Settings(
            data_dir=tmp_path_factory.mktemp("probing-data"), upstream=index.url, local_builder=False
        )


def _no_headers_python(host: SshHost) -> str:
    """A fake interpreter (named as such): the real one, except that its builds lack Python.h."""
    script = host.home / "no-headers-python"
    host.write_file(
        script,
        '#!/bin/sh\n[ "$1" = "-m" ] && { echo "fatal error: Python.h: No such file or directory"; exit 1; }\n'
        'exec /usr/bin/python3 "$@"\n',
        mode=0o755,
    )
    return str(script)


def test_each_interpreter_builds_a_tiny_c_extension_and_one_that_cannot_is_not_used(
    host: SshHost, settings: Settings
) -> None:
    # The fake fails `python -m pip`: the pinned pip is this test's frontend (uv would build
    # with the real interpreter behind the fake).
    settings = settings.model_copy(update={"frontend": "pip"})
    fake = _no_headers_python(host)
    probe = probe_remote(settings, host.endpoint(), ["/usr/bin/python3", fake, "/usr/bin/python0.9"])
    assert list(probe.pythons) == ["/usr/bin/python3"], probe
    assert str(probe.pythons["/usr/bin/python3"]["build_check"]).startswith("a tiny C extension built in")
    assert probe.pythons["/usr/bin/python3"]["frontend"] == "pip 26.3"
    assert "Python.h: No such file or directory" in probe.refused[fake], probe.refused
    assert probe.refused["/usr/bin/python0.9"].startswith("cannot run the agent"), probe.refused
    assert probe.info["refused"] == probe.refused


def test_the_probe_builds_with_uv_where_uv_supports_the_python(host: SshHost, settings: Settings) -> None:
    probe = probe_remote(settings, host.endpoint(), ["/usr/bin/python3"])
    assert probe.pythons["/usr/bin/python3"]["frontend"] == f"uv {frontend.UV_VERSION}", probe
    assert str(probe.pythons["/usr/bin/python3"]["build_check"]).startswith("a tiny C extension built in")


def test_a_builder_none_of_whose_interpreters_can_build_is_refused(host: SshHost, settings: Settings) -> None:
    settings = settings.model_copy(update={"frontend": "pip"})  # the fake fails `python -m pip`
    fake = _no_headers_python(host)
    with pytest.raises(
        BuilderError, match=r"no interpreter can build: .*no-headers-python: cannot build a tiny C"
    ):
        probe_remote(settings, host.endpoint(), [fake])


def test_the_tiny_sdist_is_the_same_bytes_every_time() -> None:
    assert probe_sdist() == probe_sdist()
