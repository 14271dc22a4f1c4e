"""Cross builds that did not work: never the project's record, always a native builder's job.

A cross build that fails, whose wheel fails the controller's verification (its ELF headers say
another machine), or whose wheel does not load on the target (its check job refused it) is the
cross builder's fault, not the project's: the project is recorded as native only (with why),
the build is undone (its row, and a refused file with its copy in the index's folder), and the
pair goes back to the queue, where only native or emulated builders take it from then on
(``queue.claims``).
"""

from __future__ import annotations

import logging
import struct
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import delete

from ..db.engine import Database
from ..db.models import Build, BuildStatus, File, Project, Version
from ..errors import VerifyError
from ..queue import releases, upkeep
from .tags import MACHINE_ELF, describe_elf

if TYPE_CHECKING:  # what verifies a wheel is imported with the first build's outcome
    from .verify import Wheel

log = logging.getLogger(__name__)
# How much of why a project is native only is kept.
MAX_WHY = 500


def _native_only(project: Project, why: str) -> None:
    if project.native_only is None:
        project.native_only = why[:MAX_WHY]
        project.dirty = True


def check_elf(wheels: list[Wheel], platform_tag: str) -> None:
    """Refuse a cross build whose wheels hold an ELF file for another machine than the job's
    platform (read here from the wheels' own headers, whatever the builder said)."""
    wanted = MACHINE_ELF.get(platform_tag.removeprefix("linux_"))
    for wheel in wheels:
        found: set[tuple[int, int]] = set()
        with zipfile.ZipFile(wheel.path) as archive:
            for info in archive.infolist():
                with archive.open(info) as member:
                    head = member.read(20)
                if head[:4] == b"\x7fELF" and len(head) == 20 and head[4:5] in (b"\x01", b"\x02"):
                    order = "<" if head[5:6] == b"\x01" else ">"
                    found.add(
                        (struct.unpack_from(order + "H", head, 18)[0], 32 if head[4:5] == b"\x01" else 64)
                    )
        if wanted is not None and found - {wanted}:
            raise VerifyError(
                f"{wheel.filename}: its ELF files are {describe_elf(frozenset(found))}, not {platform_tag}'s"
            )


def cross_failed(db: Database, build_id: int, why: str) -> bool:
    """The cross build ``build_id`` failed (``why``): the project goes to native builders, the
    build is undone and its pair is pending again. False when the build is no longer ours."""
    with db.session() as session:
        build = session.get(Build, build_id)
        if build is None or build.status != BuildStatus.BUILDING:
            return False
        project = build.version.project
        _native_only(project, f"cross build for {build.cross} failed: {why}")
        upkeep.touch(session, versions=[build.version_id])
        session.execute(delete(Build).where(Build.id == build_id))
    log.info("%s: native only from now on (%s)", project.name, why)
    return True


def drop_refused(db: Database, www_dir: Path, file_id: int, release: str, failures: list[str]) -> str | None:
    """A check refused the file ``file_id`` in ``release``: if it was cross-built, the project
    goes to native builders and the file, its build and its copy on disk go (it was never listed:
    ``releases.listed_anywhere``). The file's name when it was dropped."""
    from .record import wheel_dir

    with db.session() as session:
        file = session.get(File, file_id)
        if file is None or not releases.cross_built(file.release):
            return None
        version = session.get(Version, file.version_id)
        assert version is not None
        project = version.project
        said = "; ".join(failures[:3]) or "did not load"
        _native_only(project, f"{file.filename} did not load on {release}: {said}")
        name, filename, build_id = project.name, file.filename, file.build_id
        session.delete(file)
        session.flush()
        if build_id is not None:
            session.execute(delete(Build).where(Build.id == build_id))
        upkeep.touch(session, versions=[version.id])
        project.dirty = True
    (wheel_dir(www_dir, name) / filename).unlink(missing_ok=True)
    log.info("%s: refused on %s, dropped; %s is native only from now on", filename, release, name)
    return filename
