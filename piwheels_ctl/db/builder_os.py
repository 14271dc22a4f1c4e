"""What each builder said it is (``Builder.info["os"]``, from the agent's probe), read typed, and
what the farm's builders are together: their releases, the oldest glibc of each platform."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..abi import Glibc, parse_glibc
from ..config import Settings
from .models import Abi, Builder, BuilderPython

# What a builder may say of itself: the values name folders (``www/<codename>/``), so anything
# else is not believed. os-release's ID and VERSION_CODENAME are lower case by its specification.
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")
_GLIBC = re.compile(r"^\d+\.\d+$")


@dataclass(frozen=True)
class BuilderOS:
    """A builder's OS (os-release's ``ID``, ``VERSION_CODENAME``), its userland's Debian
    architecture and machine, and its glibc; None where it did not say."""

    id: str | None
    codename: str | None
    arch: str | None
    machine: str | None
    glibc: str | None

    @property
    def glibc_version(self) -> tuple[int, int] | None:
        return parse_glibc(self.glibc or "")

    def describe(self) -> str:
        """ "debian bookworm": what ``builders list`` and the statistics page show."""
        return " ".join(v for v in (self.id, self.codename) if v) or "unknown"


def _field(raw: dict[str, Any], key: str, pattern: re.Pattern[str]) -> str | None:
    value = raw.get(key)
    return value if isinstance(value, str) and pattern.match(value) else None


def builder_os(builder: Builder) -> BuilderOS | None:
    """What ``builder`` said it is at its last probe; None before it said anything (a builder
    registered by an older controller, until ``builders check``)."""
    raw = (builder.info or {}).get("os")
    if not isinstance(raw, dict):
        return None
    return BuilderOS(
        id=_field(raw, "id", _NAME),
        codename=_field(raw, "codename", _NAME),
        arch=_field(raw, "arch", _NAME),
        machine=_field(raw, "machine", _NAME),
        glibc=_field(raw, "glibc", _GLIBC),
    )


def releases(builders: Iterable[Builder]) -> list[str]:
    """The codenames of the releases ``builders`` run, sorted, each once."""
    return sorted({o.codename for o in map(builder_os, builders) if o is not None and o.codename})


def common_codename(builders: Iterable[Builder]) -> str | None:
    """The release every one of ``builders`` that said runs, if they agree; else None."""
    names = {o.codename for o in map(builder_os, builders) if o is not None and o.codename}
    return names.pop() if len(names) == 1 else None


def glibc_by_platform(
    session: Session, builder: Builder | None = None, platforms: Iterable[str] = ()
) -> dict[str, tuple[int, int]]:
    """The oldest glibc the builders of each platform tag said they have ({"linux_aarch64":
    (2, 36), "linux_armv7l": (2, 31)}): a builder counts for the platforms of its interpreters
    (a cross-builder's target among them), so an armhf bullseye builder never lowers what an
    arm64 bookworm one runs. ``builder``, being probed, counts for ``platforms`` too (its
    interpreters' before they are recorded)."""
    pairs = [
        (row, platform)
        for row, platform in session.execute(
            select(Builder, Abi.platform_tag).join(BuilderPython.builder).join(BuilderPython.abi)
        ).tuples()
    ]
    if builder is not None:
        pairs += [(builder, platform) for platform in platforms]
    result: dict[str, tuple[int, int]] = {}
    for row, platform in pairs:
        said = builder_os(row)
        version = said.glibc_version if said is not None else None
        if version is not None and (platform not in result or version < result[platform]):
            result[platform] = version
    return result


def farm_glibc(
    session: Session,
    settings: Settings,
    builder: Builder | None = None,
    probes: Mapping[str, Any] | None = None,
) -> Glibc:
    """The glibc that decides which of the upstream's manylinux wheels cover a target:
    ``manylinux_glibc`` where it is set (every platform), else per platform the oldest the
    builders of that platform said (``glibc_by_platform``; ``builder`` with its new ``probes``)."""
    if settings.glibc is not None:
        return settings.glibc
    platforms = [p["platform_tag"] for p in (probes or {}).values() if isinstance(p, Mapping)]
    return glibc_by_platform(session, builder, platforms)


def farm_debian_source(
    session: Session, settings: Settings, codename: str | None = None
) -> tuple[str, str] | None:
    """(mirror, suite) of the Contents index for hints: ``debian_suite`` where it is set, else
    ``codename`` (the release of the builder that failed) or the release all builders run, else
    the apt sources' suite."""
    if codename is None and settings.debian_suite == "auto":
        codename = common_codename(session.scalars(select(Builder)))
    return settings.debian_source_for(codename)
