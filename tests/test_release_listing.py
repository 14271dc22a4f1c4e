"""What each OS release's index lists, published incrementally and in full, and the coverage
and check jobs that follow the same rule (no builds here: rows, as the recorder leaves them;
the real releases are ``test_release_indexes``)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from test_publisher import add_project, add_version, add_wheel

from piwheels_ctl.db.engine import Database
from piwheels_ctl.db.models import Abi, Builder, BuilderPython, Coverage, File, PendingPair, ReleaseCheck
from piwheels_ctl.publish.publisher import publish_from
from piwheels_ctl.queue import checks
from piwheels_ctl.queue.coverage import add_coverage, uncover_other_releases


def _listed(www: Path, release: str, project: str) -> list[str]:
    page = www / release / "simple" / project / "index.json"
    return sorted(f["filename"] for f in json.loads(page.read_text())["files"]) if page.exists() else []


def _root(www: Path, release: str) -> list[str]:
    return [p["name"] for p in json.loads((www / release / "simple" / "index.json").read_text())["projects"]]


def _farm(db: Database) -> dict[str, int]:
    """A bullseye builder with cp39 and a bookworm one with cp311: their ABI ids by release."""
    ids = {}
    with db.session() as session:
        for name, release, py in (("old", "bullseye", "39"), ("new", "bookworm", "311")):
            abi = Abi(tag=f"cp{py}-cp{py}-linux_x86_64", python_tag=f"cp{py}", abi_tag=f"cp{py}",
                      platform_tag="linux_x86_64", active=True)  # fmt: skip
            builder = Builder(name=name, host="127.0.1.49", info={"os": {"codename": release}})
            session.add_all([abi, builder])
            session.flush()
            session.add(BuilderPython(builder_id=builder.id, abi_id=abi.id, path="/usr/bin/python3"))
            ids[release] = abi.id
    return ids


def test_a_compiled_wheel_reaches_another_release_only_once_loaded_there(
    db: Database, tmp_path: Path
) -> None:
    abis = _farm(db)
    www = tmp_path / "www"
    with db.session() as session:
        project = add_project(session, "ext")
        version = add_version(session, project, "1.0")
        version.sdist_url = "https://example.org/ext-1.0.tar.gz"
        project.watched = True
        abi3 = add_wheel(session, version, "cp38-abi3-linux_x86_64")
        abi3.release = "bullseye"
        pure = add_wheel(session, add_version(session, add_project(session, "pure"), "1.0"))
        pure.release = "bookworm"
        session.flush()
        for f in (abi3, pure):
            add_coverage(session, f, session.scalars(select(Abi)))
    publish_from(db, www)
    assert _listed(www, "bullseye", "ext") == ["ext-1.0-cp38-abi3-linux_x86_64.whl"]
    assert _listed(www, "bookworm", "ext") == [], "a bullseye wheel in bookworm's index, unchecked"
    assert (
        _listed(www, "bookworm", "pure") == _listed(www, "bullseye", "pure") == ["pure-1.0-py3-none-any.whl"]
    )
    assert _root(www, "bookworm") == ["pure"] and _root(www, "bullseye") == ["ext", "pure"]
    front = (www / "index.html").read_text()
    assert "bookworm/simple/" in front and "bullseye/simple/" in front, (
        "the front page names no release index"
    )
    with db.session() as session:
        covered = {
            abi for (abi,) in session.execute(select(Coverage.abi_id).where(Coverage.file_id == abi3.id))
        }
        assert covered == {abis["bullseye"]}, "the abi3 wheel covers bookworm's cp311 unchecked"
        pending = set(session.execute(select(PendingPair.version_id, PendingPair.abi_id)).tuples())
        assert (version.id, abis["bookworm"]) in pending, pending
        # The bookworm builder's claim takes the check, not the build, and the build waits for it.
        builder_id = session.scalar(select(Builder.id).where(Builder.name == "new"))
        job = checks.claim_check(session, "bookworm", [abis["bookworm"]], builder_id, timedelta(minutes=5))
        assert job is not None and job.filename == abi3.filename, job
        assert session.scalar(select(checks.undecided(version.id, "bookworm")))
        assert (
            checks.record_check(session, job, builder_id, {"ok": True, "failures": [], "notes": []})
            == "passed"
        )
    publish_from(db, www)  # incremental: the check marked the project dirty
    assert _listed(www, "bookworm", "ext") == ["ext-1.0-cp38-abi3-linux_x86_64.whl"]
    assert _root(www, "bookworm") == ["ext", "pure"]
    page = json.loads((www / "bookworm" / "simple" / "ext" / "index.json").read_text())
    assert page["files"][0]["url"] == "../../../simple/ext/ext-1.0-cp38-abi3-linux_x86_64.whl", page
    with db.session() as session:
        assert not session.scalar(
            select(PendingPair.version_id).where(PendingPair.abi_id == abis["bookworm"])
        )
        check = session.get(ReleaseCheck, (abi3.id, "bookworm"))
        assert check is not None and check.status == "passed"
    full = tmp_path / "full"
    publish_from(db, full, full=True)
    for release in ("bookworm", "bullseye"):
        for name in ("ext", "pure"):
            assert _listed(full, release, name) == _listed(www, release, name), (release, name)


def test_a_builder_of_another_release_takes_back_coverage_and_queues_checks(db: Database) -> None:
    """A file recorded while the ABI had no release (its builder said none) covers it by its
    tags; once a builder of another release has the ABI, that coverage goes and a check is queued."""
    with db.session() as session:
        abi = Abi(tag="cp311-cp311-linux_x86_64", python_tag="cp311", abi_tag="cp311",
                  platform_tag="linux_x86_64", active=True)  # fmt: skip
        builder = Builder(name="new", host="127.0.1.49", info={})
        session.add_all([abi, builder])
        session.flush()
        session.add(BuilderPython(builder_id=builder.id, abi_id=abi.id, path="/usr/bin/python3"))
        project = add_project(session, "ext")
        wheel = add_wheel(session, add_version(session, project, "1.0"), "cp38-abi3-linux_x86_64")
        wheel.release = "bullseye"
        session.flush()
        add_coverage(session, wheel, [abi])
        assert session.scalar(select(Coverage.file_id)) == wheel.id
        builder.info = {"os": {"codename": "bookworm"}}
        session.flush()
        uncover_other_releases(session)
        assert session.scalar(select(Coverage.file_id)) is None, "coverage kept for another release"
        queued = session.execute(
            select(ReleaseCheck.file_id, ReleaseCheck.release, ReleaseCheck.status)
        ).all()
        assert [tuple(r) for r in queued] == [(wheel.id, "bookworm", "pending")], queued
        assert session.scalar(select(File.release)) == "bullseye"


def test_a_builder_cannot_name_a_folder_of_the_site_as_its_release() -> None:
    from piwheels_ctl.queue.releases import release_of

    assert release_of({"os": {"codename": "bookworm"}}) == "bookworm"
    for hostile in ("../etc", "simple", "project", "Bookworm", "a/b", "", "x" * 40, 7):
        assert release_of({"os": {"codename": hostile}}) is None, hostile
    assert release_of({}) is None and release_of({"os": "bookworm"}) is None
