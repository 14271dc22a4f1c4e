"""A wheel for another machine or Python is the project's doing when the build's own interpreter
and compiler could not have made it; it stays the builder's when they did.

The attack is built for real: sdists of ``tests/packages`` whose own ``setup.cfg`` tags their
wheels for a Raspberry Pi or for CPython 2.7, built on this x86_64 machine's local builder through
``piwheels-ctl run``. The builder that does make another machine's wheels (a 64-bit kernel under
a 32-bit userland) cannot run here: that case is the decision function fed the facts as the agent
reports them.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from packaging.tags import Tag
from sqlalchemy import select

from piwheels_ctl.abi import AbiTags
from piwheels_ctl.builds.tags import BuildFacts, check_tags
from piwheels_ctl.db.engine import Database
from piwheels_ctl.db.models import Build, Builder, Handback, Project, Version
from piwheels_ctl.errors import TagError, VerifyError

from helpers import clean_env, piwheels
from indexserver import IndexServer
from sdists import PACKAGES, make_sdist

FOREIGN = ("foreign-platform-ext", "foreign-platform-pure", "foreign-python")
# ELF (e_machine, class) pairs as the agent reports them.
ARM_32, AARCH64_64, X86_64_64 = (40, 32), (183, 64), (62, 64)


@pytest.mark.build
@pytest.mark.skipif(os.uname().machine == "armv7l", reason="the attack tags its wheels linux_armv7l")
def test_an_sdist_that_writes_a_foreign_wheel_is_its_own_invalid_wheel_recorded_once(
    tmp_path: Path, build_deps: Path
) -> None:
    data, upstream = tmp_path / "data", tmp_path / "upstream"
    upstream.mkdir()
    for wheel in build_deps.glob("*.whl"):
        shutil.copy(wheel, upstream)
    for name in FOREIGN:
        make_sdist(PACKAGES / name, upstream)
    with IndexServer(upstream) as index:
        env = clean_env(
            PIWHEELS_DATA_DIR=str(data),
            PIWHEELS_UPSTREAM=index.url,
            PIWHEELS_PYTHONS=sys.executable,
            PIWHEELS_SLOTS="2",
            PIWHEELS_BUILD_TIMEOUT="600",
            PIWHEELS_DEBIAN_MIRROR="",
        )
        piwheels(env, "init")
        piwheels(env, "add", *FOREIGN)
        # One build each: a job handed back would need a fourth claim, and stays in the queue.
        run = piwheels(env, "run", "--limit", str(len(FOREIGN)))
    db = Database(f"sqlite:///{data / 'piwheels.db'}")
    try:
        with db.session() as session:
            rows = session.execute(
                select(Project.name, Build)
                .join(Version, Version.project_id == Project.id)
                .join(Build, Build.version_id == Version.id)
            ).all()
            builds = {name: (b.status.value, b.failure_reason, b.failure_detail) for name, b in rows}
            handbacks = [(h.version_id, h.abi_id, h.last_error) for h in session.scalars(select(Handback))]
            builders = {
                b.name: (b.healthy, b.info.get("last_error")) for b in session.scalars(select(Builder))
            }
    finally:
        db.dispose()
    assert handbacks == [], f"handed back as the builder's fault: {handbacks} (run said {run.stdout})"
    assert len(rows) == len(FOREIGN), f"builds recorded: {rows} (run said {run.stdout})"
    assert builders == {"local": (True, None)}, f"the builder was blamed: {builders}"
    assert "handed back" not in run.stdout + run.stderr, run.stdout + run.stderr
    for name in FOREIGN:
        status, reason, detail = builds[name]
        assert (status, reason) == ("failed", "invalid-wheel"), (name, builds[name])
        assert detail is not None and "the project wrote this tag itself" in detail, (name, detail)
    machine = os.uname().machine
    assert "-linux_armv7l.whl" in builds["foreign-platform-ext"][2], builds["foreign-platform-ext"]
    assert f"its ELF files are {machine}" in builds["foreign-platform-ext"][2], builds["foreign-platform-ext"]
    assert "no ELF files" in builds["foreign-platform-pure"][2], builds["foreign-platform-pure"]
    assert "-cp27-none-any.whl" in builds["foreign-python"][2], builds["foreign-python"]


# The decision, on the facts the agent reports: a Raspberry Pi 4 with a 64-bit kernel and a
# 32-bit (armv7l) userland, whose interpreter builds for cp311-cp311-linux_armv7l.
PI_USERLAND_32 = AbiTags("cp311", "cp311", "linux_armv7l")


def _pi_facts(elf: frozenset[tuple[int, int]] | None) -> BuildFacts:
    return BuildFacts(interpreter=PI_USERLAND_32, machine="aarch64", personality="linux32", elf=elf)


def _check(tag: str, facts: BuildFacts, abi: AbiTags = PI_USERLAND_32) -> None:
    check_tags(f"demo-1.0-{tag}.whl", frozenset({Tag(*tag.split("-"))}), abi, facts)


def test_kernel_code_from_a_32_bit_userland_is_the_builders_fault_faked_no_such_kernel_here() -> None:
    """Not run on such a builder (there is none here): the facts its agent would report."""
    with pytest.raises(TagError, match="the kernel's") as raised:
        _check("cp311-cp311-linux_aarch64", _pi_facts(frozenset({AARCH64_64})))
    assert "aarch64 (64-bit)" in str(raised.value), raised.value


@pytest.mark.parametrize(
    ("tag", "elf", "found"),
    [
        # The userland's own 32-bit ARM code, tagged for the kernel: the project named the tag.
        ("cp311-cp311-linux_aarch64", frozenset({ARM_32}), "its ELF files are arm (32-bit)"),
        ("py3-none-linux_aarch64", frozenset(), "no ELF files"),
        # Code for a machine the builder is not: shipped by the project, whatever the tag.
        ("cp311-cp311-linux_x86_64", frozenset({X86_64_64}), "x86_64 (64-bit)"),
        ("cp311-cp311-linux_aarch64", frozenset({AARCH64_64, ARM_32}), "aarch64 (64-bit)"),
        ("cp27-cp27mu-linux_armv7l", frozenset({ARM_32}), "does not fit the job's ABI"),
    ],
)
def test_on_that_builder_a_tag_its_compiler_did_not_make_is_the_projects(
    tag: str, elf: frozenset[tuple[int, int]], found: str
) -> None:
    with pytest.raises(VerifyError, match="the project wrote this tag itself") as raised:
        _check(tag, _pi_facts(elf))
    assert type(raised.value) is VerifyError, f"{tag} with {elf}: {raised.value!r}"
    assert found in str(raised.value), raised.value


def test_an_interpreter_other_than_the_jobs_is_the_builders_fault() -> None:
    """The builder's /usr/bin/python3 became 3.12 after it was probed for cp311: its wheels say so."""
    facts = BuildFacts(AbiTags("cp312", "cp312", "linux_armv7l"), "armv7l", None, frozenset({ARM_32}))
    with pytest.raises(TagError, match="the interpreter that built it makes cp312-cp312-linux_armv7l"):
        _check("cp312-cp312-linux_armv7l", facts)


def test_without_the_agents_facts_a_foreign_tag_is_the_projects() -> None:
    with pytest.raises(VerifyError) as raised:
        _check("cp311-cp311-linux_aarch64", _pi_facts(None))
    assert type(raised.value) is VerifyError, raised.value
