"""Cross builders on the controller's side (rows as the recorder leaves them; the real cross
builds are ``test_cross``): a cross-built wheel is listed in no index, not even the index of
every release, until a native builder of its release has loaded it (a check job the cross
builder never takes); a refused one is dropped and its project goes to native builders; claims
prefer cross builders and keep them off native-only projects; registration keeps the cross mark.
"""

from __future__ import annotations

import json
import zipfile
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

from sqlalchemy import select
from test_publisher import add_project, add_version, add_wheel

from piwheels_ctl.builds.checks import next_check
from piwheels_ctl.builds.cross import cross_failed, drop_refused
from piwheels_ctl.db.engine import Database
from piwheels_ctl.db.models import Abi, Build, Builder, BuilderPython, Coverage, File, Project
from piwheels_ctl.farm.agentcall import cross_key
from piwheels_ctl.farm.executors import cross_abis
from piwheels_ctl.farm.registry import set_pythons
from piwheels_ctl.publish.publisher import publish_from
from piwheels_ctl.queue import checks
from piwheels_ctl.queue.claims import claim_next
from piwheels_ctl.queue.coverage import add_coverage
from piwheels_ctl.queue.status import figures

ARMHF = "cp311-cp311-linux_armv7l"
LEASE = timedelta(minutes=5)


def _farm(db: Database) -> tuple[int, int, int]:
    """A bookworm cross builder and a bookworm emulated builder of the armv7l ABI: (abi, cross, pi)."""
    with db.session() as session:
        abi = Abi(tag=ARMHF, python_tag="cp311", abi_tag="cp311", platform_tag="linux_armv7l", active=True)
        cross = Builder(
            name="x86", host="127.0.1.85", info={"os": {"codename": "bookworm"}, "cross": {ARMHF: "armhf"}}
        )
        pi = Builder(name="pi", host="127.0.1.86", info={"os": {"codename": "bookworm"}})
        session.add_all([abi, cross, pi])
        session.flush()
        for builder in (cross, pi):
            session.add(BuilderPython(builder_id=builder.id, abi_id=abi.id, path="/usr/bin/python3"))
        return abi.id, cross.id, pi.id


def _executor(db: Database, builder_id: int) -> SimpleNamespace:
    with db.session() as session:
        builder = session.get(Builder, builder_id)
        assert builder is not None
        return SimpleNamespace(
            builder_id=builder_id, release="bookworm", pythons={p.abi_id: p.path for p in builder.pythons},
            cross=cross_abis(builder),
        )  # fmt: skip


def _cross_wheel(db: Database) -> tuple[int, int]:
    """ext 1.0's armv7l wheel as a cross build records it: (file id, version id)."""
    with db.session() as session:
        project = add_project(session, "ext")
        project.watched = True
        version = add_version(session, project, "1.0")
        version.sdist_url = "https://example.org/ext-1.0.tar.gz"
        wheel = add_wheel(session, version, ARMHF)
        wheel.release = "bookworm-cross"
        session.flush()
        add_coverage(session, wheel, session.scalars(select(Abi)))
        return wheel.id, version.id


def _index(www: Path, *parts: str) -> list[str]:
    page = www.joinpath(*parts, "ext", "index.json")
    return sorted(f["filename"] for f in json.loads(page.read_text())["files"]) if page.exists() else []


def test_a_cross_built_wheel_is_served_only_once_a_native_builder_of_its_release_loaded_it(
    db: Database, tmp_path: Path
) -> None:
    _abi, cross_id, pi_id = _farm(db)
    file_id, _version = _cross_wheel(db)
    www = tmp_path / "www"
    publish_from(db, www)
    assert _index(www, "simple") == [], "the index of every release serves a cross-built wheel unchecked"
    assert _index(www, "bookworm", "simple") == [], "bookworm's index serves a cross-built wheel unchecked"
    assert next_check(db, _executor(db, cross_id), LEASE) is None, (
        "the cross builder took the check of its own ABI"
    )
    job = next_check(db, _executor(db, pi_id), LEASE)
    assert job is not None and job.file_id == file_id, job
    with db.session() as session:
        assert checks.record_check(session, job, pi_id, {"ok": True, "failures": [], "notes": []}) == "passed"
        assert session.scalar(select(Coverage.file_id)) == file_id, "the loaded wheel covers nothing"
    publish_from(db, www)
    name = f"ext-1.0-{ARMHF}.whl"
    assert _index(www, "simple") == [name] and _index(www, "bookworm", "simple") == [name]


def test_a_refused_cross_built_wheel_is_dropped_and_its_project_goes_to_native_builders(
    db: Database, tmp_path: Path
) -> None:
    abi_id, cross_id, pi_id = _farm(db)
    file_id, version_id = _cross_wheel(db)
    www = tmp_path / "www"
    (www / "simple" / "ext").mkdir(parents=True)
    on_disk = www / "simple" / "ext" / f"ext-1.0-{ARMHF}.whl"
    on_disk.write_bytes(b"PK")
    job = next_check(db, _executor(db, pi_id), LEASE)
    assert job is not None
    failure = "_ext.so: undefined symbol: cblas_sgemm"
    with db.session() as session:
        assert (
            checks.record_check(session, job, pi_id, {"ok": False, "failures": [failure], "notes": []})
            == "refused"
        )
    assert drop_refused(db, www, file_id, "bookworm", [failure]) == on_disk.name
    assert not on_disk.exists(), "the refused wheel stays in the index's folder"
    with db.session() as session:
        assert session.get(File, file_id) is None
        project = session.scalar(select(Project).where(Project.name == "ext"))
        assert project is not None and project.native_only and failure in project.native_only, (
            project.native_only
        )
        # The cross builder leaves it; the emulated one takes it even though a cross builder serves the ABI.
        assert claim_next(session, [abi_id], cross_id, LEASE, {abi_id: "armhf"}) is None
        taken = claim_next(session, [abi_id], pi_id, LEASE, None, {abi_id})
        assert taken is not None and taken[0].version_id == version_id and taken[1].cross is None, taken
    assert figures_of(db)["native_only"] == 1
    publish_from(db, www)
    page = (www / "project" / "ext" / "index.html").read_text()
    assert 'id="native-only"' in page and "cblas_sgemm" in page, "the project page does not say native only"


def test_claims_prefer_the_cross_builder_and_a_failed_cross_build_is_never_the_projects_record(
    db: Database,
) -> None:
    abi_id, cross_id, pi_id = _farm(db)
    with db.session() as session:
        project = add_project(session, "ext")
        project.watched = True
        version = add_version(session, project, "1.0")
        version.sdist_url = "https://example.org/ext-1.0.tar.gz"
    with db.session() as session:
        assert claim_next(session, [abi_id], pi_id, LEASE, None, {abi_id}) is None, (
            "a native builder took a job a cross builder serves"
        )
        taken = claim_next(session, [abi_id], cross_id, LEASE, {abi_id: "armhf"})
        assert taken is not None and taken[1].cross == "armhf", taken
        build_id = taken[1].id
    assert cross_failed(db, build_id, "other: this build needs an ARM board, found x86_64")
    with db.session() as session:
        assert session.get(Build, build_id) is None, "the failed cross build stays in the project's record"
        project = session.scalar(select(Project).where(Project.name == "ext"))
        assert project is not None and "needs an ARM board" in (project.native_only or "")
        assert claim_next(session, [abi_id], cross_id, LEASE, {abi_id: "armhf"}) is None
        taken = claim_next(session, [abi_id], pi_id, LEASE, None, {abi_id})
        assert taken is not None, "the native builder does not get the native-only project"


def test_registration_keeps_the_cross_mark_and_the_interpreter(db: Database) -> None:
    probe = {"python_tag": "cp311", "abi_tag": "cp311", "platform_tag": "linux_armv7l",
             "cross": {"target": "armhf", "triplet": "arm-linux-gnueabihf"}}  # fmt: skip
    native = {"python_tag": "cp311", "abi_tag": "cp311", "platform_tag": "linux_x86_64"}
    with db.session() as session:
        builder = Builder(name="x86", host="127.0.1.87", info={})
        session.add(builder)
        session.flush()
        set_pythons(session, builder, {"python3": native, cross_key("python3", "armhf"): probe})
        assert builder.info["cross"] == {ARMHF: "armhf"}, builder.info
        assert sorted((p.abi.tag, p.path) for p in builder.pythons) == [
            (ARMHF, "python3"), ("cp311-cp311-linux_x86_64", "python3"),
        ]  # fmt: skip
        assert list(cross_abis(builder).values()) == ["armhf"]


def figures_of(db: Database) -> dict[str, object]:
    with db.reader() as session:
        return figures(session)


def test_a_cross_built_wheel_with_an_elf_file_of_another_machine_is_refused(tmp_path: Path) -> None:
    from typing import cast

    from piwheels_ctl.builds.cross import check_elf
    from piwheels_ctl.builds.verify import Wheel
    from piwheels_ctl.errors import VerifyError

    def wheel(e_machine: int, bits: int) -> Wheel:
        path = tmp_path / f"ext-1.0-{ARMHF}-{e_machine}.whl"
        header = b"\x7fELF" + bytes([1 if bits == 32 else 2, 1, 1]) + bytes(9) + (3).to_bytes(2, "little")
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr(
                "ext.cpython-311-arm-linux-gnueabihf.so", header + e_machine.to_bytes(2, "little")
            )
            archive.writestr("ext/__init__.py", "")
        return cast(Wheel, SimpleNamespace(path=path, filename=path.name))

    check_elf([wheel(40, 32)], "linux_armv7l")  # ARM code in an armv7l wheel
    try:
        check_elf([wheel(62, 64)], "linux_armv7l")
    except VerifyError as exc:
        assert "x86_64 (64-bit)" in str(exc), exc
    else:
        raise AssertionError("an x86_64 module in a cross-built armv7l wheel passed")
