"""What comes back from a build is checked, all of it: hostile wheels made here go through the real
collector, runner and recorder, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import re
import tracemalloc
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from piwheels_ctl.abi import AbiTags
from piwheels_ctl.builds.runner import Runner, RunReport
from piwheels_ctl.builds.verify import Limits, inspect_wheel
from piwheels_ctl.catalog.rebuild import rebuild as requeue
from piwheels_ctl.config import Settings
from piwheels_ctl.db.engine import Database
from piwheels_ctl.db.models import Abi, Build, BuildStatus, File, Project, ServedFile, Version
from piwheels_ctl.errors import ArrivalError, TagError, VerifyError
from piwheels_ctl.farm.executors import Outcome
from piwheels_ctl.queue.claims import claim, pending

from wheels import declare_size, make_metadata_bomb, make_wheel, record_line

ABI = AbiTags("cp311", "cp311", "linux_armv7l")
GOOD_TAG = "cp311-cp311-linux_armv7l"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Farm:
    db: Database
    settings: Settings
    runner: Runner
    tmp: Path

    @property
    def project_dir(self) -> Path:
        return self.settings.www_dir / "simple" / "demo"

    def outbox(self, name: str) -> Path:
        path = self.tmp / "outboxes" / name
        path.mkdir(parents=True)
        return path

    def record(
        self, wheels: list[Path], lie: dict[str, str] | None = None, facts: dict[str, Any] | None = None
    ) -> tuple[bool, int, RunReport]:
        """Claim the next job, and record a build that made ``wheels`` (``lie``: sha256 reported
        for a file name instead of the real one; ``facts``: the agent's ``platform`` and each
        file's ``elf`` by name); (success, build id, report)."""
        with self.db.session() as session:
            job = next(pending(session, claimable=True, limit=1))
            build_id = claim(session, job, None, timedelta(hours=1)).id
        outbox = wheels[0].parent
        facts = facts or {}
        files = [
            {"name": w.name, "size": w.stat().st_size, "sha256": (lie or {}).get(w.name, sha256(w))}
            | ({"elf": facts[w.name]} if w.name in facts else {})
            for w in wheels
        ]
        log = outbox / "build.log"
        log.write_text("built\n")
        result: dict[str, Any] = {"status": "success", "duration": 1.0, "files": files}
        if "platform" in facts:
            result["platform"] = facts["platform"]
        report = RunReport()
        ok = self.runner.record(Outcome(job, build_id, result, outbox, log), report)
        return ok, build_id, report

    def build(self, build_id: int) -> Build:
        with self.db.session() as session:
            build = session.get(Build, build_id)
            assert build is not None
            session.expunge(build)
            return build

    def files(self) -> dict[str, str]:
        with self.db.session() as session:
            return {f.filename: f.sha256 for f in session.scalars(select(File))}


@pytest.fixture
def farm(db: Database, tmp_path: Path) -> Farm:
    """A database with one project ``demo`` 1.0 to build for cp311 on linux_armv7l."""
    with db.session() as session:
        session.add(
            Abi(tag=ABI.tag, python_tag=ABI.python_tag, abi_tag=ABI.abi_tag, platform_tag=ABI.platform_tag)
        )
        project = Project(name="demo", display_name="Demo", watched=True)
        project.versions.append(
            Version(version="1.0", sdist_url="http://x/demo-1.0.tar.gz", sdist_filename="demo-1.0.tar.gz")
        )
        session.add(project)
    settings = Settings(data_dir=tmp_path / "data")
    return Farm(db, settings, Runner(db, settings, []), tmp_path)


# 1. Only the wheels of this job: project, version, and tags that fit its ABI and platform.


# What a Raspberry Pi 4 with a 64-bit kernel and a 32-bit userland reports of a build whose
# compiler made 64-bit code for its kernel; and a builder whose interpreter became 3.12.
KERNEL_64 = {"machine": "aarch64", "personality": "linux32"}
AARCH64_ELF = [{"machine": 183, "class": 64}]
PYTHON_312 = {"machine": "armv7l", "personality": None, "python_tag": "cp312", "abi_tag": "cp312",
              "platform_tag": "linux_armv7l"}  # fmt: skip


@pytest.mark.parametrize(
    ("tag", "platform", "elf"),
    [
        ("cp311-cp311-linux_aarch64", KERNEL_64, AARCH64_ELF),  # the kernel's code and platform
        ("cp311-cp311-linux_armv7l.linux_aarch64", KERNEL_64, AARCH64_ELF),  # one foreign tag of two
        ("cp312-cp312-linux_armv7l", PYTHON_312, []),  # another interpreter than the job's
    ],
)
def test_a_wheel_the_builder_made_for_another_platform_or_python_is_the_builders_fault(
    farm: Farm, tag: str, platform: dict[str, Any], elf: list[dict[str, int]]
) -> None:
    outbox = farm.outbox("build")
    good = make_wheel(outbox, "demo", "1.0", tag=GOOD_TAG)
    wrong = make_wheel(outbox, "demo", "1.0", tag=tag)
    with pytest.raises(TagError, match=re.escape(wrong.name)):
        farm.record([good, wrong], facts={"platform": platform, wrong.name: elf})
    # All or nothing, and nothing recorded against the project: the job goes back to the queue.
    assert farm.files() == {}, "a wheel of a refused build was recorded"


@pytest.mark.parametrize(
    ("name", "version", "tag"),
    [
        ("demo", "1.0", "py2-none-any"),  # installs on no Python 3
        ("demo", "1.0", "cp311-cp311-manylinux_2_17_armv7l"),  # a promise no builder checked
        ("demo", "1.0", "cp311-cp311-win_amd64"),  # only the project's own settings make this
        ("demo", "1.0", "cp311-cp311-linux_aarch64"),  # another Pi's, written by the project
        ("demo", "1.0", "cp312-cp312-linux_armv7l"),  # another Python's, written by the project
        ("other", "1.0", GOOD_TAG),  # another project
        ("demo", "2.0", GOOD_TAG),  # another version
    ],
)
def test_a_wheel_not_of_the_job_fails_the_whole_build(farm: Farm, name: str, version: str, tag: str) -> None:
    outbox = farm.outbox("build")
    good = make_wheel(outbox, "demo", "1.0", tag=GOOD_TAG)
    hostile = make_wheel(outbox, name, version, tag=tag)
    ok, build_id, report = farm.record([good, hostile])
    build = farm.build(build_id)
    assert not ok, f"{hostile.name} was accepted"
    assert (build.status, build.failure_reason) == (BuildStatus.FAILED, "invalid-wheel"), build.failure_detail
    assert build.failure_detail is not None and hostile.name in build.failure_detail, build.failure_detail
    assert report.failures[0][1:] == ("invalid-wheel", build.failure_detail)
    # All or nothing: the good wheel of the same build is not published either.
    assert farm.files() == {}, "a wheel of a refused build was recorded"
    assert not list(farm.project_dir.glob("*.whl")) if farm.project_dir.exists() else True


@pytest.mark.parametrize(
    ("metadata", "detail"),
    [
        (
            {"requires_python": ">=3.8," + "x" * 16378},
            "Requires-Python is 16,384 characters long, more than the 255 the index keeps",
        ),
        ({"requires_python": ">=3.8; rm -rf /"}, "Requires-Python '>=3.8; rm -rf /' is not valid"),
        ({"requires_python": ">=3.8\nRequires-Python: <3"}, "gives Requires-Python 2 times"),
        ({"requires": ("numpy >=>= 1",)}, "Requires-Dist 'numpy >=>= 1' is not valid"),
    ],
    ids=[
        "16 KB Requires-Python",
        "invalid Requires-Python",
        "Requires-Python twice",
        "invalid Requires-Dist",
    ],
)
def test_a_wheel_with_metadata_pip_cannot_read_fails_the_build(
    farm: Farm, metadata: dict[str, Any], detail: str
) -> None:
    outbox = farm.outbox("build")
    hostile = make_wheel(outbox, "demo", "1.0", tag=GOOD_TAG, **metadata)
    ok, build_id, _report = farm.record([hostile])
    build = farm.build(build_id)
    assert not ok, f"{hostile.name} with {metadata} was accepted"
    assert (build.status, build.failure_reason) == (BuildStatus.FAILED, "invalid-wheel"), build.failure_detail
    assert build.failure_detail == f"{hostile.name}: METADATA {detail}", build.failure_detail
    assert farm.files() == {}, "a wheel with invalid metadata was recorded"


def test_a_wheel_not_as_reported_is_the_builders_fault_even_beside_a_refused_one(farm: Farm) -> None:
    outbox = farm.outbox("build")
    refused = make_wheel(outbox, "demo", "1.0", tag="cp311-cp311-win_amd64")
    changed = make_wheel(outbox, "demo", "1.0", tag=GOOD_TAG)
    with pytest.raises(ArrivalError, match=changed.name):
        farm.record([refused, changed], lie={changed.name: "0" * 64})
    assert farm.files() == {}


def test_a_good_build_is_recorded_and_listed_with_its_hash_at_once(farm: Farm) -> None:
    outbox = farm.outbox("build")
    pure = make_wheel(outbox, "demo", "1.0", tag=GOOD_TAG)
    ok, build_id, _report = farm.record([pure])
    assert ok and farm.build(build_id).status is BuildStatus.SUCCESS
    placed = farm.project_dir / pure.name
    # 4. The project's pages are written in the step that placed the wheel, before any publish.
    page = json.loads((farm.project_dir / "index.json").read_text())
    assert {f["filename"]: f["hashes"]["sha256"] for f in page["files"]} == {pure.name: sha256(placed)}
    html = (farm.project_dir / "index.html").read_text()
    assert f"{pure.name}#sha256={sha256(placed)}" in html, html
    metadata = farm.project_dir / f"{pure.name}.metadata"
    assert page["files"][0]["core-metadata"] == {"sha256": sha256(metadata)}


# 2. Every wheel verified as pip would, and more.


def _hostile(tmp: Path, **kwargs: Any) -> Path:
    return make_wheel(tmp, "demo", "1.0", tag=GOOD_TAG, **kwargs)


HOSTILE: dict[str, tuple[Callable[[Path], Path], str]] = {
    "member hash not RECORD's": (
        lambda t: _hostile(t, record_rows={"demo.py": record_line("demo.py", b"other\n")}),
        "Hash mismatch",
    ),
    "member size not RECORD's": (
        lambda t: _hostile(
            t,
            record_rows={"demo.py": record_line("demo.py", b"VERSION = '1.0'\n").rsplit(",", 1)[0] + ",999"},
        ),
        "RECORD says 999",
    ),
    "member not in RECORD": (lambda t: _hostile(t, unrecorded={"demo/evil.py": b"x"}), "demo/evil.py"),
    "RECORD entry without hash": (lambda t: _hostile(t, record_rows={"demo.py": "demo.py,,"}), "demo.py"),
    "RECORD lists a missing member": (
        lambda t: _hostile(
            t,
            record_rows={"demo.py": record_line("demo.py", b"VERSION = '1.0'\n") + "\nghost.py,sha256=AA,1"},
        ),
        "ghost.py",
    ),
    "absolute path": (lambda t: _hostile(t, extra={"/etc/cron.d/evil": b"x"}), "/etc/cron.d/evil"),
    "parent folder": (lambda t: _hostile(t, extra={"demo/../../evil.py": b"x"}), "evil.py"),
    "backslash": (lambda t: _hostile(t, extra={"demo\\..\\evil.py": b"x"}), "evil.py"),
    "symbolic link": (lambda t: _hostile(t, symlinks={"demo/passwd": "/etc/passwd"}), "symbolic link"),
    "duplicate member": (lambda t: _hostile(t, duplicate="demo.py"), "appears twice"),
    "second dist-info": (
        lambda t: _hostile(t, extra={"evil-1.0.dist-info/METADATA": b"Name: evil\n"}),
        "one .dist-info",
    ),
    "WHEEL tags not the file name's": (
        lambda t: _hostile(t, wheel_tags=(GOOD_TAG, "cp311-cp311-linux_aarch64")),
        "WHEEL declares tags",
    ),
    "zip bomb member": (lambda t: _hostile(t, extra={"demo/zeros.bin": bytes(64 << 20)}), "ratio"),
    "METADATA of 300 MB": (lambda t: make_metadata_bomb(t, "demo", "1.0", 300 << 20, GOOD_TAG), "METADATA"),
    "a page before the archive": (lambda t: _with_bytes(_hostile(t), prefix=True), "before the first"),
    "a page after the members": (lambda t: _with_bytes(_hostile(t), prefix=False), "members account for"),
}


def _with_bytes(wheel: Path, *, prefix: bool) -> Path:
    """``wheel`` with 8 MB of a web page before its first member (which pip would still install:
    a zip is read from its end), or between its last member and its central directory (the end
    record's offset of that directory moved along)."""
    junk = b"<html><script>alert(1)</script>" + b" " * (8 << 20)
    data = wheel.read_bytes()
    if prefix:
        wheel.write_bytes(junk + data)
        return wheel
    end = data[-22:]  # the end record, without a comment
    assert end[:4] == b"PK\x05\x06", end
    directory = int.from_bytes(end[16:20], "little")
    moved = end[:16] + (directory + len(junk)).to_bytes(4, "little") + end[20:]
    wheel.write_bytes(data[:directory] + junk + data[directory:-22] + moved)
    return wheel


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_archives_are_refused_by_name(tmp_path: Path, case: str) -> None:
    make, expected = HOSTILE[case]
    path = make(tmp_path)
    tracemalloc.start()
    try:
        with pytest.raises(VerifyError) as refused:
            inspect_wheel(path, name="demo", version="1.0", abi=ABI)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(refused.value)
    assert message.startswith(path.name), f"{case}: the error does not name the file: {message}"
    assert expected in message, f"{case}: {message}"
    assert peak < 32 << 20, f"{case}: checking a {path.stat().st_size}-byte wheel took {peak} bytes of memory"


def test_an_honest_wheel_passes(tmp_path: Path) -> None:
    wheel = inspect_wheel(_hostile(tmp_path), name="demo", version="1.0", abi=ABI)
    assert (wheel.name, wheel.version, wheel.platform_tag) == ("demo", "1.0", "linux_armv7l")


def test_declared_sizes_are_not_trusted(tmp_path: Path) -> None:
    (tmp_path / "small").mkdir()
    small = _hostile(tmp_path / "small")
    declare_size(small, "demo-1.0.dist-info/METADATA", 10)  # reads stop short: CRC and hash fail
    with pytest.raises(VerifyError, match=small.name):
        inspect_wheel(small, name="demo", version="1.0", abi=ABI)
    (tmp_path / "huge").mkdir()
    huge = _hostile(tmp_path / "huge")
    declare_size(huge, "demo.py", 3 << 30)  # over the total before a byte is read
    with pytest.raises(VerifyError, match="unpacks to"):
        inspect_wheel(huge, name="demo", version="1.0", abi=ABI)


def test_the_total_is_capped_whatever_each_member_says(tmp_path: Path) -> None:
    path = _hostile(tmp_path, extra={f"demo/data{n}.bin": bytes(range(256)) * 64 for n in range(4)})
    with pytest.raises(VerifyError, match="more than 40000 bytes"):
        inspect_wheel(path, name="demo", version="1.0", abi=ABI, limits=Limits(total=40000))


def test_every_read_member_is_hashed(tmp_path: Path) -> None:
    """A member altered after the RECORD was written (same size) is caught by WheelFile."""
    path = _hostile(tmp_path)
    data = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        stored = archive.getinfo("demo.py")
    assert stored.compress_type == zipfile.ZIP_DEFLATED
    rewritten = tmp_path / "rewritten"
    rewritten.mkdir()
    target = rewritten / path.name
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            body = b"VERSION = '6.6'\n" if info.filename == "demo.py" else src.read(info)
            dst.writestr(info.filename, body)
    assert target.read_bytes() != data
    with pytest.raises(VerifyError, match=r"Hash mismatch for file 'demo\.py'"):
        inspect_wheel(target, name="demo", version="1.0", abi=ABI)


# 3. A rebuilt wheel never reuses a file name with other bytes.


def test_a_rebuild_with_other_bytes_gets_a_build_tag_and_the_old_url_keeps_its_bytes(farm: Farm) -> None:
    first = make_wheel(farm.outbox("1"), "demo", "1.0", tag=GOOD_TAG)
    first_bytes = first.read_bytes()
    assert farm.record([first])[0]
    plain = farm.project_dir / first.name

    def rebuild(outbox: str, content: bytes | None) -> bytes:
        """Rebuild, the build making a wheel with ``content`` in a data file; the wheel's bytes."""
        with farm.db.session() as session:
            assert requeue(session, "demo", "1.0").queued == ["1.0"]
        extra = {"demo_data.txt": content} if content is not None else {}
        wheel = make_wheel(farm.outbox(outbox), "demo", "1.0", tag=GOOD_TAG, extra=extra)
        made = wheel.read_bytes()
        ok, _build_id, report = farm.record([wheel])
        assert ok, report.failures
        return made

    rebuild("2", b"second build\n")
    tagged = farm.project_dir / "demo-1.0-1-cp311-cp311-linux_armv7l.whl"
    assert plain.read_bytes() == first_bytes, "the old URL now serves other bytes"
    assert tagged.exists(), sorted(p.name for p in farm.project_dir.iterdir())
    with zipfile.ZipFile(tagged) as archive:
        wheel_info = archive.read("demo-1.0.dist-info/WHEEL").decode()
    assert "Build: 1" in wheel_info, wheel_info
    inspect_wheel(tagged, name="demo", version="1.0", abi=ABI)  # still a valid wheel, RECORD and all
    # Both are listed, each with the hash of the bytes at its URL, before any publish.
    page = json.loads((farm.project_dir / "index.json").read_text())
    listed = {f["filename"]: f["hashes"]["sha256"] for f in page["files"]}
    assert listed == {plain.name: sha256(plain), tagged.name: sha256(tagged)}, listed

    # A name that was served and then forgotten (audit --fix) is still never reused.
    with farm.db.session() as session:
        row = session.scalars(select(File).where(File.filename == tagged.name)).one()
        session.delete(row)
    tagged.unlink()
    rebuild("3", b"third build\n")
    assert not tagged.exists(), "a forgotten name was served again with other bytes"
    third = farm.project_dir / "demo-1.0-2-cp311-cp311-linux_armv7l.whl"
    assert third.exists(), sorted(p.name for p in farm.project_dir.iterdir())

    # Bytes equal to the first build's still get the next tag: pip prefers the newest build.
    assert rebuild("4", None) == first_bytes
    with farm.db.session() as session:
        served = {s.filename: s.sha256 for s in session.scalars(select(ServedFile))}
    assert "demo-1.0-3-cp311-cp311-linux_armv7l.whl" in served, sorted(served)
    for filename, digest in served.items():
        on_disk = farm.project_dir / filename
        if on_disk.exists():
            assert sha256(on_disk) == digest, f"{filename} has other bytes than it was served with"


def test_an_identical_rebuild_keeps_its_name(farm: Farm) -> None:
    first = make_wheel(farm.outbox("1"), "demo", "1.0", tag=GOOD_TAG)
    assert farm.record([first])[0]
    with farm.db.session() as session:
        requeue(session, "demo", "1.0")
    again = make_wheel(farm.outbox("2"), "demo", "1.0", tag=GOOD_TAG)
    assert again.read_bytes() == (farm.project_dir / first.name).read_bytes()
    assert farm.record([again])[0]
    assert sorted(p.name for p in farm.project_dir.glob("*.whl")) == [first.name]


def test_upgrading_takes_every_published_name(database_url: str) -> None:
    """Migration 0003 fills served_files from the files already served, so their names stay theirs."""
    from alembic import command
    from sqlalchemy import text

    from piwheels_ctl.db.engine import alembic_config

    database = Database(database_url)
    try:
        command.upgrade(alembic_config(database.engine), "0002")
        rows = [
            "INSERT INTO projects (id, name, display_name, watched, dirty) VALUES (1, 'a', 'a', true, false)",
            "INSERT INTO versions (id, project_id, version, yanked, priority) VALUES (1, 1, '1.0', false, 0)",
            "INSERT INTO files (id, filename, version_id, size, sha256, python_tag, abi_tag, platform_tag,"
            " metadata_sha256, core_metadata, uploaded_at) VALUES (1, 'a-1.0-py3-none-any.whl', 1, 5,"
            " 'abc', 'py3', 'none', 'any', 'def', '', CURRENT_TIMESTAMP)",
        ]
        with database.engine.begin() as conn:
            for statement in rows:
                conn.execute(text(statement))
        command.upgrade(alembic_config(database.engine), "head")
        with database.engine.connect() as conn:
            served = conn.execute(text("SELECT filename, sha256, size FROM served_files")).all()
        assert served == [("a-1.0-py3-none-any.whl", "abc", 5)], served
    finally:
        database.dispose()


def test_an_armv6_userlands_armv7l_wheel_is_also_published_as_linux_armv6l(farm: Farm) -> None:
    outbox = farm.outbox("build")
    wheel = make_wheel(outbox, "demo", "1.0", tag=GOOD_TAG)
    with farm.db.session() as session:
        job = next(pending(session, claimable=True, limit=1))
        build_id = claim(session, job, None, timedelta(hours=1)).id
    files = [{"name": wheel.name, "size": wheel.stat().st_size, "sha256": sha256(wheel), "deps": []}]
    result: dict[str, Any] = {"status": "success", "duration": 1.0, "files": files, "armv6_userland": True}
    (outbox / "build.log").write_text("built\n")
    assert farm.runner.record(Outcome(job, build_id, result, outbox, outbox / "build.log"), RunReport())
    with farm.db.session() as session:
        recorded = {f.filename: (f.build_id, f.sha256, f.platform_tag) for f in session.scalars(select(File))}
    armv6 = wheel.name.replace("linux_armv7l", "linux_armv6l")
    assert set(recorded) == {wheel.name, armv6}, recorded
    assert recorded[armv6][0] == recorded[wheel.name][0] == build_id  # a file of the same build
    assert recorded[armv6][1] != recorded[wheel.name][1]  # its own bytes: WHEEL names its tag
    with zipfile.ZipFile(farm.project_dir / armv6) as archive:
        wheel_info = archive.read("demo-1.0.dist-info/WHEEL").decode()
    assert "Tag: cp311-cp311-linux_armv6l" in wheel_info, wheel_info
    assert (farm.project_dir / f"{armv6}.metadata").exists()


def test_a_debian_armhf_userlands_wheel_is_not_published_for_armv6(farm: Farm) -> None:
    wheel = make_wheel(farm.outbox("build"), "demo", "1.0", tag=GOOD_TAG)
    ok, _build_id, _report = farm.record([wheel])
    assert ok and set(farm.files()) == {wheel.name}
