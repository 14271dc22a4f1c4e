"""What each builder said it is (``Builder.info["os"]``, from the agent's probe), read typed, and
what the farm's builders are together: their releases, their oldest glibc."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..abi import parse_glibc
from ..config import Settings
from .models import Builder

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


def oldest_glibc(builders: Iterable[Builder]) -> tuple[int, int] | None:
    """The oldest glibc among ``builders`` (what a manylinux wheel may need at most to run on all
    of them); None where none said."""
    versions = [o.glibc_version for o in map(builder_os, builders) if o is not None]
    known = [v for v in versions if v is not None]
    return min(known) if known else None


def common_codename(builders: Iterable[Builder]) -> str | None:
    """The release every one of ``builders`` that said runs, if they agree; else None."""
    names = {o.codename for o in map(builder_os, builders) if o is not None and o.codename}
    return names.pop() if len(names) == 1 else None


def farm_glibc(session: Session, settings: Settings) -> tuple[int, int] | None:
    """The glibc that decides which of the upstream's manylinux wheels cover a target:
    ``manylinux_glibc`` where it is set, else the oldest the builders said they have."""
    if settings.glibc is not None:
        return settings.glibc
    return oldest_glibc(session.scalars(select(Builder)))


def farm_debian_source(
    session: Session, settings: Settings, codename: str | None = None
) -> tuple[str, str] | None:
    """(mirror, suite) of the Contents index for hints: ``debian_suite`` where it is set, else
    ``codename`` (the release of the builder that failed) or the release all builders run, else
    the apt sources' suite."""
    if codename is None and settings.debian_suite == "auto":
        codename = common_codename(session.scalars(select(Builder)))
    return settings.debian_source_for(codename)
