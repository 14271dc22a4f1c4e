"""Check that the database, the wheels on disk and the published index agree, and mend what can be."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..db.models import BuildStatus, File, Project
from ..files import sha256_of, sha256_or_none
from ..publish import rootindex
from ..publish.publisher import write_project_pages
from ..queue.claims import reclaim, stale_builds
from .record import wheel_dir

TEMP_SUFFIXES = (".old", ".import", ".tmp")


@dataclass(frozen=True)
class Disagreement:
    """One place where the database, the disk and the index do not tell the same story."""

    kind: str
    where: str
    detail: str


def _page_hashes(folder: Path) -> dict[str, dict[str, str | None]] | None:
    """For each page of a project folder (``index.json``, ``index.html``), the sha256 it gives each
    file it lists; None if the JSON page is missing or unreadable."""
    from pypi_simple import ProjectPage  # imported on first use: the CLI starts faster

    pages: dict[str, dict[str, str | None]] = {}
    try:
        data = json.loads((folder / "index.json").read_text(encoding="utf-8"))
        listed = ProjectPage.from_json_data(data)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    pages["index.json"] = {p.filename: p.digests.get("sha256") for p in listed.packages}
    try:
        html = ProjectPage.from_html(folder.name, (folder / "index.html").read_bytes())
    except (OSError, ValueError):
        html = None
    if html is not None:
        pages["index.html"] = {p.filename: p.digests.get("sha256") for p in html.packages}
    return pages


def audit(session: Session, www_dir: Path, *, deep: bool = False) -> list[Disagreement]:
    """Every disagreement between rows, files on disk and published pages.

    Always: names and sizes on disk, and the sha256 each page gives a file against the database.
    ``deep``: also re-hash every wheel and metadata file on disk against the database.
    """
    found: list[Disagreement] = []
    rows: dict[str, dict[str, File]] = defaultdict(dict)
    dirty: dict[str, bool] = {}
    for file, project, is_dirty in session.execute(
        select(File, Project.name, Project.dirty).join(File.version).join(Project)
    ).tuples():
        rows[project][file.filename] = file
        dirty[project] = is_dirty
    for project, files in rows.items():
        for filename, file in files.items():
            path = wheel_dir(www_dir, project) / filename
            if not path.is_file():
                found.append(Disagreement("row-without-file", str(path), "recorded but not on disk"))
                continue
            size = path.stat().st_size
            if size != file.size:
                found.append(Disagreement("size-mismatch", str(path), f"{size} bytes, recorded {file.size}"))
            elif deep and (actual := sha256_of(path)[1]) != file.sha256:
                found.append(
                    Disagreement(
                        "hash-mismatch", str(path), f"sha256 on disk {actual}, recorded {file.sha256}"
                    )
                )
            metadata = path.with_name(f"{filename}.metadata")
            if deep and metadata.exists() and (meta_sha := sha256_or_none(metadata)) != file.metadata_sha256:
                found.append(
                    Disagreement(
                        "metadata-mismatch",
                        str(metadata),
                        f"sha256 on disk {meta_sha}, recorded {file.metadata_sha256}",
                    )
                )
    simple = www_dir / "simple"
    for folder in sorted(p for p in simple.iterdir() if p.is_dir()) if simple.is_dir() else []:
        known = rows.get(folder.name, {})
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") and path.name.endswith(TEMP_SUFFIXES):
                found.append(Disagreement("stray-temp-file", str(path), "left by an interrupted write"))
            elif path.suffix == ".whl" and path.name not in known:
                found.append(Disagreement("file-without-row", str(path), "on disk but not recorded"))
        pages = _page_hashes(folder)
        # A name is never reused with other bytes: a page giving a file another hash than its
        # row is wrong whether or not the project changed since the last publish.
        for page, hashes in (pages or {}).items():
            for filename, sha256 in sorted(hashes.items()):
                row = known.get(filename)
                if row is not None and sha256 != row.sha256:
                    found.append(
                        Disagreement(
                            "index-hash-mismatch",
                            folder.name,
                            f"{page} gives {filename} sha256 {sha256}, recorded {row.sha256}",
                        )
                    )
        if dirty.get(folder.name, False):
            continue  # changed since the last publish: its page is due to be rewritten anyway
        if pages is None:
            if known:
                found.append(Disagreement("unpublished", folder.name, "project has no readable index page"))
        elif set(pages["index.json"]) != set(known):
            published = set(pages["index.json"])
            extra, missing = sorted(published - set(known)), sorted(set(known) - published)
            found.append(
                Disagreement("index-stale", folder.name, f"page lists {extra} not recorded, lacks {missing}")
            )
    for name, roots in rootindex.without_page(simple).items():
        absent = ", ".join(f"{name}/{page}" for page in roots)
        found.append(Disagreement("listed-without-page", name, f"the root index lists it, {absent} missing"))
    for build in stale_builds(session):
        found.append(
            Disagreement("stale-lease", f"build {build.id}", f"held by {build.lease_owner}, not running")
        )
    return found


# What ``fix`` does about each kind of disagreement, said before it does it.
PLAN = {
    "row-without-file": "forget {name} (not on disk): it will be built again",
    "size-mismatch": "move {name} to quarantine and forget it: it will be built again",
    "hash-mismatch": "move {name} to quarantine and forget it: it will be built again",
    "file-without-row": "move {name} to quarantine (not recorded)",
    "stray-temp-file": "remove {where}",
    "metadata-mismatch": "remove {name}: it will be written again",
    "index-stale": "rewrite the pages of {where}",
    "unpublished": "rewrite the pages of {where}",
    "index-hash-mismatch": "rewrite the pages of {where}",
    "stale-lease": "hand back {where}",
    "listed-without-page": "write the pages of {where} (the root index lists it)",
}
# The kinds whose repair takes a published wheel away (to quarantine, or its row forgotten).
TAKES_WHEEL = frozenset({"row-without-file", "size-mismatch", "hash-mismatch", "file-without-row"})
# ``fix`` may always take this many wheels away; more only within ``audit_fix_max_share``.
FIX_ALWAYS = 10


def plan(found: list[Disagreement]) -> list[str]:
    """What ``fix`` would do about ``found``, one line a disagreement."""
    return [PLAN[p.kind].format(name=Path(p.where).name, where=p.where) for p in found]


def too_many_taken(session: Session, found: list[Disagreement], max_share: float) -> str | None:
    """Why ``fix`` must not run on ``found`` without --force, or None: it would take away more
    published wheels than FIX_ALWAYS and ``max_share`` of them (recorded, or on disk)."""
    taken = {p.where for p in found if p.kind in TAKES_WHEEL}
    strays = sum(p.kind == "file-without-row" for p in found)
    published = session.scalar(select(func.count()).select_from(File)) or 0
    allowed = max(FIX_ALWAYS, int(max_share * (published + strays)))
    if len(taken) <= allowed:
        return None
    return (
        f"--fix would move to quarantine or forget {len(taken)} of the {published + strays} wheel(s) "
        f"recorded or on disk, more than {allowed} (audit_fix_max_share {max_share:g}): so many at once "
        "is more likely a damaged database or a missing disk than strays; check them, then pass --force"
    )


def _quarantine(path: Path, data_dir: Path) -> None:
    target = data_dir / "quarantine" / path.parent.name / path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(path), target)


def fix(session: Session, www_dir: Path, data_dir: Path, found: list[Disagreement]) -> list[str]:
    """Repair from the database what ``audit`` found; the projects touched are left dirty for publish."""
    done = []
    for problem in found:
        path = Path(problem.where)
        if problem.kind in ("row-without-file", "size-mismatch", "hash-mismatch"):
            file = session.scalar(select(File).where(File.filename == path.name))
            if file is not None:
                file.version.project.dirty = True
                if file.build is not None and file.build.status is BuildStatus.SUCCESS:
                    session.delete(file.build)  # so the queue builds it again
                session.delete(file)
            if path.exists():
                _quarantine(path, data_dir)
            done.append(f"forgot {path.name}: it will be built again")
        elif problem.kind == "file-without-row":
            _quarantine(path, data_dir)
            done.append(f"moved {path.name} to quarantine")
        elif problem.kind == "stray-temp-file":
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
            done.append(f"removed {path}")
        elif problem.kind == "metadata-mismatch":
            path.unlink(missing_ok=True)
            file = session.scalar(select(File).where(File.filename == path.name.removesuffix(".metadata")))
            if file is not None:
                file.version.project.dirty = True
            done.append(f"removed {path.name}: it will be written again")
        elif problem.kind in ("index-stale", "unpublished", "index-hash-mismatch"):
            project = session.scalar(select(Project).where(Project.name == problem.where))
            if project is not None:
                project.dirty = True
                done.append(f"{problem.where}: page will be rewritten")
        elif problem.kind == "listed-without-page":
            project = session.scalar(select(Project).where(Project.name == problem.where))
            if project is None:
                done.append(f"{problem.where}: not in the database; 'publish --full' unlists it")
            else:
                write_project_pages(session, www_dir, project.id)
                # The root lists it: publish takes it out if it has no wheel (any more).
                project.listed_name = project.listed_name or project.display_name
                project.dirty = True
                done.append(f"{problem.where}: page written")
    if any(p.kind == "stale-lease" for p in found):
        done.append(f"handed back {reclaim(session)} build(s) with stale leases")
    session.flush()
    return done
