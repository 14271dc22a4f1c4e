"""The OS releases of the farm (each builder's ``info["os"]["codename"]``) and where a file is
listed: built on a release, or without compiled code, or loaded there by a check.

A wheel is compiled unless its platform tag is ``any``: ``py3-none-linux_armv7l`` holds code
for a platform (a binary, a library loaded by ctypes) even without a Python extension. A
compiled file built on one release is listed in another release's index only once a builder of
that release has loaded it (``ReleaseCheck`` ``passed``). Mirrored files and files recorded
before builders said their release (``release`` None) are listed everywhere, as before: the
upstream's manylinux tag is its own promise, and pip checks glibc against it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db.batches import in_batches
from ..db.models import Builder, BuilderPython, ReleaseCheck

# A release's name as it may appear in a path and a URL (os-release's VERSION_CODENAME).
RELEASE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
# Folder names under www/ that a release may not take.
RESERVED = frozenset({"simple", "project", "stats", "static", "ccache", "logs"})

PENDING, CHECKING, PASSED, REFUSED = "pending", "checking", "passed", "refused"
# What a cross-built file's ``release`` (built on) says after its builder's release
# ("bookworm-cross"): no release is named so, so no index lists it until a builder of the
# release loaded it (a check job), and the index of every release waits for that too.
CROSS_SUFFIX = "-cross"


def built_on(info: Mapping[str, Any] | None, cross: str | None) -> str | None:
    """What a file built by a builder of ``info`` records as built on; ``cross``: the Debian
    architecture the build cross-built for (None: a native build)."""
    release = release_of(info)
    return release + CROSS_SUFFIX if release is not None and cross else release


def cross_built(built: str | None) -> bool:
    """Whether a file's ``release`` says it was cross-built (``built_on``)."""
    return built is not None and built.endswith(CROSS_SUFFIX)


def release_of(info: Mapping[str, Any] | None) -> str | None:
    """A builder's release from its probe's ``info`` (None: it has not said, or said nonsense)."""
    os_info = (info or {}).get("os")
    codename = os_info.get("codename") if isinstance(os_info, dict) else None
    if isinstance(codename, str) and RELEASE_NAME.match(codename) and codename not in RESERVED:
        return codename
    return None


def farm_releases(session: Session) -> list[str]:
    """The releases the farm has builders for, sorted."""
    return sorted({r for info in session.scalars(select(Builder.info)) if (r := release_of(info))})


def abi_releases(session: Session) -> dict[int, set[str]]:
    """The releases each ABI is built on (ABIs of builders that said no release: none)."""
    rows = session.execute(select(BuilderPython.abi_id, Builder.info).join(BuilderPython.builder))
    result: dict[int, set[str]] = {}
    for abi_id, info in rows:
        release = release_of(info)
        if release is not None:
            result.setdefault(abi_id, set()).add(release)
    return result


def compiled(platform_tag: str) -> bool:
    """Whether a wheel with this platform tag holds code for a platform."""
    return platform_tag != "any"


def listed_anywhere(*, platform_tag: str, built_on: str | None, passed: Collection[str] = ()) -> bool:
    """Whether the index of every release lists a file: all but a cross-built one that no
    builder of the target has loaded yet."""
    return not compiled(platform_tag) or not cross_built(built_on) or bool(passed)


def listed_in(release: str, *, platform_tag: str, built_on: str | None, passed: Collection[str] = ()) -> bool:
    """Whether a file is listed in ``release``'s index (``passed``: releases that loaded it)."""
    return not compiled(platform_tag) or built_on is None or built_on == release or release in passed


def passed_checks(session: Session, file_ids: Iterable[int]) -> dict[int, set[str]]:
    """The releases that loaded each of these files."""
    result: dict[int, set[str]] = {}
    query = select(ReleaseCheck.file_id, ReleaseCheck.release).where(ReleaseCheck.status == PASSED)
    for batch in in_batches(sorted(set(file_ids))):
        for file_id, release in session.execute(query.where(ReleaseCheck.file_id.in_(batch))):
            result.setdefault(file_id, set()).add(release)
    return result


def checks_of(session: Session, file_ids: Iterable[int]) -> dict[int, dict[str, ReleaseCheck]]:
    """Every check of these files, by file and release (for the pages)."""
    result: dict[int, dict[str, ReleaseCheck]] = {}
    for batch in in_batches(sorted(set(file_ids))):
        for check in session.scalars(select(ReleaseCheck).where(ReleaseCheck.file_id.in_(batch))):
            result.setdefault(check.file_id, {})[check.release] = check
    return result
