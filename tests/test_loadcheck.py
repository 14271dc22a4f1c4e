"""The load check, for real: the builds of two fixture C extensions on the local builder and on an
SSH builder (sshd on loopback), one calling a function no library defines (refused as
``import-failed``, never published), one whose init imports a Python module that is not
installed (published, with a note); and builders that say what they are.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from piwheels_ctl.agent import agent, buildplatform, loadcheck
from piwheels_ctl.config import Settings
from piwheels_ctl.db.builder_os import builder_os, farm_debian_source, farm_glibc
from piwheels_ctl.db.engine import Database
from piwheels_ctl.db.models import Abi, Builder, Project, UpstreamCoverage, UpstreamWheel, Version
from piwheels_ctl.failures.classify import classify
from piwheels_ctl.farm.agentcall import check_answer
from piwheels_ctl.farm.registry import register_remote, set_pythons
from piwheels_ctl.queue.upstream_coverage import record_wheels
from piwheels_ctl.upstream.page import WheelLink

from helpers import clean_env, piwheels
from indexserver import IndexServer
from sdists import make_sdist, pip_env
from sshd import SshHost, ssh_hosts

pytestmark = pytest.mark.build

PY2_PACKAGES = Path(__file__).parent / "packages-py2"
FIXTURES = ("undefined-symbol-ext", "import-note-ext")
SYMBOL = "piwheels_no_such_function"
MISSING = "piwheels_missing_dependency"
SYSTEM_PYTHON = "/usr/bin/python3"
ADDRESS = "127.0.1.40"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory, build_deps: Path) -> Iterator[IndexServer]:
    folder = tmp_path_factory.mktemp("loadcheck-upstream")
    for name in FIXTURES:
        make_sdist(PY2_PACKAGES / name, folder)
    for wheel in build_deps.glob("*.whl"):
        shutil.copy(wheel, folder)
    with IndexServer(folder) as index:
        yield index


@pytest.fixture(scope="module")
def host() -> Iterator[SshHost]:
    with ssh_hosts("piwheels-loadcheck-", [(ADDRESS, "pwload1")]) as started:
        yield started[0]


def _this_machine() -> dict[str, str | None]:
    """What this machine is, read here apart from the agent: os-release, dpkg, glibc."""
    release = buildplatform.os_release()
    return {
        "id": release.get("ID"),
        "codename": release.get("VERSION_CODENAME"),
        "arch": buildplatform.dpkg_architecture(os.uname().machine),
        "machine": os.uname().machine,
        "glibc": os.confstr("CS_GNU_LIBC_VERSION").split()[-1],
    }


def _built_and_checked(env: dict[str, str], data: Path, builder: str) -> None:
    """Build both fixtures with the farm in ``env``: the one that cannot load refused, the other
    published with its note."""
    piwheels(env, "add", *FIXTURES)
    out = piwheels(env, "run", check=False).stdout
    assert "built 1, failed 1" in out, out
    failures = json.loads(piwheels(env, "failures", "--json").stdout)
    assert [(f["name"], f["reason"], f["detail"]) for f in failures] == [
        ("undefined-symbol-ext", "import-failed", SYMBOL)
    ], failures
    evidence = failures[0]["evidence"]
    assert f"undefined symbol: {SYMBOL}" in evidence and "undefined_symbol_ext" in evidence, evidence
    www = data / "www" / "simple"
    assert not list(www.glob("undefined-symbol-ext/*.whl")), "a wheel that does not load was published"
    log = piwheels(env, "logs", "undefined-symbol-ext", "1.0").stdout
    assert "[piwheels] import-failed: undefined_symbol_ext" in log and SYMBOL in log, log[-2000:]
    assert [p.name for p in www.glob("import-note-ext/*.whl")], "the wheel with a note was not published"
    piwheels(env, "publish")
    page = json.loads((data / "www" / "project" / "import-note-ext" / "json").read_text())
    cells = [c for r in page["releases"] for c in r["cells"].values() if c["state"] == "built"]
    assert cells and cells[0]["builder"] == builder, page
    assert any(MISSING in n for n in cells[0]["notes"] or []), cells
    html = (data / "www" / "project" / "import-note-ext" / "index.html").read_text()
    assert MISSING in html, "the note is not on the project's page"


def test_the_local_builder_refuses_a_wheel_that_cannot_load(tmp_path: Path, upstream: IndexServer) -> None:
    data = tmp_path / "data"
    env = clean_env(PIWHEELS_DATA_DIR=str(data), PIWHEELS_UPSTREAM=upstream.url,
                    PIWHEELS_PYTHONS=sys.executable, PIWHEELS_BUILD_TIMEOUT="600")  # fmt: skip
    piwheels(env, "init")
    _built_and_checked(env, data, "local")
    listing = json.loads(piwheels(env, "builders", "list", "--json").stdout)
    assert listing[0]["os"] == _this_machine(), listing
    table = piwheels({**env, "COLUMNS": "300"}, "builders", "list").stdout
    said = _this_machine()
    assert f"{said['id']} {said['codename']}" in table and str(said["glibc"]) in table, table


def test_an_ssh_builder_refuses_it_and_says_what_it_is(
    tmp_path: Path, upstream: IndexServer, host: SshHost
) -> None:
    data = tmp_path / "data"
    env = clean_env(PIWHEELS_DATA_DIR=str(data), PIWHEELS_UPSTREAM=upstream.url,
                    PIWHEELS_LOCAL_BUILDER="false", PIWHEELS_BUILD_TIMEOUT="600",
                    PIWHEELS_CONNECT_TIMEOUT="10", PIWHEELS_COMMAND_TIMEOUT="60")  # fmt: skip
    piwheels(env, "init")
    piwheels(
        env, "builders", "add", "b1", "--host", host.address, "--port", str(host.port), "--user", host.user,
        "--key", str(host.key_file), "--python", SYSTEM_PYTHON, "--trust-host-key", "--no-build-check",
    )  # fmt: skip
    listing = json.loads(piwheels(env, "builders", "list", "--json").stdout)
    assert listing[0]["os"] == _this_machine(), listing  # the host is this machine
    table = piwheels({**env, "COLUMNS": "300"}, "builders", "list").stdout
    assert "OS" in table and str(_this_machine()["glibc"]) in table, table
    _built_and_checked(env, data, "b1")
    piwheels(env, "publish")
    stats = (data / "www" / "stats" / "index.html").read_text()
    assert f"{_this_machine()['codename']}" in stats and str(_this_machine()["arch"]) in stats, stats


def test_a_check_job_answers_load_check_alone(tmp_path: Path) -> None:
    """``--check-wheel``: the load check of a given wheel by the agent's command line, nothing
    built, the same answer key as a build's."""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
         str(PY2_PACKAGES / "undefined-symbol-ext")],
        env=pip_env(), check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    wheel = next(wheels.glob("*.whl"))
    done = subprocess.run(
        [sys.executable, str(Path(agent.__file__)), "build", "--python", sys.executable,
         "--name", "undefined-symbol-ext", "--version", "1.0", "--outbox", str(tmp_path / "outbox"),
         "--log", str(tmp_path / "check.log"), "--work-root", str(tmp_path / "work"),
         "--check-wheel", str(wheel)],
        capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    result = check_answer(json.loads(done.stdout.splitlines()[-1]), "check job")
    assert result["status"] == "success" and result["files"] == [], result
    check = result["load_check"]
    assert check["ok"] is False and len(check["failures"]) == 1, check
    assert SYMBOL in check["failures"][0] and str(tmp_path) not in check["failures"][0], check
    assert SYMBOL in (tmp_path / "check.log").read_text()
    left = [p for p in (tmp_path / "work").rglob("*") if p.name.startswith("loadcheck-")]
    assert left == [], f"the check's folders were left behind: {left}"
    assert wheel.exists(), "the checked wheel is the caller's: it stays"


def test_the_agents_load_check_is_the_reason() -> None:
    failure = classify("", load_check=[f"x.so: undefined symbol: {SYMBOL}"])
    assert (failure.reason, failure.detail) == ("import-failed", SYMBOL), failure
    failure = classify("", load_check=["x.so: libssl.so.1.1: cannot open shared object file: No such file"])
    assert (failure.reason, failure.detail) == ("import-failed", "libssl.so.1.1"), failure


def test_unsafe_member_names_are_refused(tmp_path: Path) -> None:
    import zipfile

    wheel = tmp_path / "evil-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("../escape.so", b"\x7fELF")
    with pytest.raises(loadcheck.WheelError, match="refused member"):
        loadcheck.unpack(str(wheel), str(tmp_path / "out"))
    assert not (tmp_path / "escape.so").exists()


def test_the_farms_glibc_and_suite_follow_the_builders_unless_set(db: Database, tmp_path: Path) -> None:
    """manylinux_glibc and debian_suite: the builders' where they said, the settings' where set."""
    with db.session() as session:
        for name, codename, glibc in (
            ("pi4", "bookworm", "2.36"),
            ("pi3", "bookworm", "2.31"),
            ("old", None, None),
        ):
            said = {
                "id": "debian",
                "codename": codename,
                "arch": "armhf",
                "machine": "armv7l",
                "glibc": glibc,
            }
            session.add(Builder(name=name, host=f"{name}.example", info={"os": said} if codename else {}))
        session.add(
            Builder(name="liar", host="liar.example", info={"os": {"codename": "../../etc", "glibc": "x"}})
        )
    auto = Settings(data_dir=tmp_path, debian_mirror="http://mirror.example/debian/", debian_suite="auto")
    mirror = "http://mirror.example/debian/"
    fixed = Settings(data_dir=tmp_path, debian_mirror=mirror, debian_suite="bullseye", manylinux_glibc="2.28")
    armhf = {"python_tag": "cp311", "abi_tag": "cp311", "platform_tag": "linux_armv7l"}
    with db.session() as session:
        for builder in session.scalars(select(Builder)):
            set_pythons(session, builder, {"/usr/bin/python3": armhf})
    with db.session() as session:
        assert farm_glibc(session, auto) == {"linux_armv7l": (2, 31)}  # the oldest a builder said
        assert farm_glibc(session, fixed) == (2, 28)
        assert farm_debian_source(session, auto) == ("http://mirror.example/debian/", "bookworm")
        assert farm_debian_source(session, fixed) == ("http://mirror.example/debian/", "bullseye")
        liar = session.scalars(select(Builder).where(Builder.name == "liar")).one()
        said = builder_os(liar)
        assert said is not None and (said.codename, said.glibc) == (None, None), said  # never a path


def _os(codename: str, arch: str, machine: str, glibc: str) -> dict[str, object]:
    return {"os": {"id": "debian", "codename": codename, "arch": arch, "machine": machine, "glibc": glibc}}


def test_the_glibc_that_lets_upstream_manylinux_wheels_cover_an_abi_is_its_platforms_own(
    db: Database, tmp_path: Path
) -> None:
    """Without manylinux_glibc, an armhf bullseye builder (glibc 2.31) does not lower what the
    arm64 bookworm one (2.36) runs, and the arm64 one does not raise the armhf one's: the
    upstream's manylinux_2_34_aarch64 wheel covers the arm64 pair, its manylinux_2_34_armv7l
    wheel not the armhf one, and no aarch64 wheel ever covers armv7l."""
    wheels = {
        "aarch64": "spam-1.0-cp311-cp311-manylinux_2_34_aarch64.whl",
        "armv7l-new": "spam-1.0-cp311-cp311-manylinux_2_34_armv7l.whl",
        "armv7l-old": "spam-1.0-cp311-cp311-manylinux_2_31_armv7l.whl",
    }
    with db.session() as session:  # the upstream's wheels are known before any builder
        project = Project(name="spam", display_name="spam")
        session.add(project)
        session.add(Version(project=project, version="1.0"))
        links = [
            WheelLink(name, f"http://upstream.example/{name}", "0" * 64, None, None)
            for name in wheels.values()
        ]
        record_wheels(session, project, {"1.0": links}, None)
    arm64 = {"python_tag": "cp311", "abi_tag": "cp311", "platform_tag": "linux_aarch64"}
    armhf = {"python_tag": "cp311", "abi_tag": "cp311", "platform_tag": "linux_armv7l"}
    # The armhf builder first: the arm64 one joins a farm whose oldest glibc is 2.31.
    for name, probe, info in (
        ("pi3", armhf, _os("bullseye", "armhf", "armv7l", "2.31")),
        ("pi5", arm64, _os("bookworm", "arm64", "aarch64", "2.36")),
    ):
        with db.session() as session:
            register_remote(
                session, name=name, host=f"{name}.example", port=22, user="pi", key_file=None,
                host_key="", slots=1, info=info, probes={"/usr/bin/python3": probe},
            )  # fmt: skip
    with db.session() as session:
        covered = {
            (abi, wheel)
            for abi, wheel in session.execute(
                select(Abi.platform_tag, UpstreamWheel.filename)
                .join(UpstreamCoverage, UpstreamCoverage.abi_id == Abi.id)
                .join(UpstreamWheel, UpstreamWheel.id == UpstreamCoverage.wheel_id)
            ).tuples()
        }
        expected = {("linux_aarch64", wheels["aarch64"]), ("linux_armv7l", wheels["armv7l-old"])}
        assert covered == expected, f"the upstream's wheels cover {sorted(covered)}"
        settings = Settings(data_dir=tmp_path)
        assert farm_glibc(session, settings) == {"linux_aarch64": (2, 36), "linux_armv7l": (2, 31)}
    # A Pi 4 with a 32-bit userland on its 64-bit kernel (buster: 2.28) lowers armv7l only.
    with db.session() as session:
        register_remote(
            session, name="pi4", host="pi4.example", port=22, user="pi", key_file=None, host_key="",
            slots=1, info=_os("buster", "armhf", "aarch64", "2.28"), probes={"/usr/bin/python3": armhf},
        )  # fmt: skip
    with db.session() as session:
        assert farm_glibc(session, settings) == {"linux_aarch64": (2, 36), "linux_armv7l": (2, 28)}
        assert farm_glibc(session, Settings(data_dir=tmp_path, manylinux_glibc="2.28")) == (2, 28)
