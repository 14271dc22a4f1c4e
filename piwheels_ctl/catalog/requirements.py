"""What the user asks to build: ``NAME[specifier]`` arguments and pip requirements files, parsed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from ..errors import InputError
from .columns import NAME_MAX


@dataclass(frozen=True)
class Wanted:
    """A project asked for by the user, with the versions wanted (None: every version)."""

    name: str  # as given
    specifier: SpecifierSet | None
    source: str  # where it came from, for error messages

    @property
    def canonical(self) -> str:
        return canonicalize_name(self.name)


def parse_wanted(text: str, source: str) -> Wanted:
    """Parse ``NAME`` or ``NAME==VERSION`` (any PEP 508 specifier) into a Wanted."""
    try:
        req = Requirement(text.strip())
    except InvalidRequirement as exc:
        reason = str(exc).splitlines()[0]  # packaging adds the text and a caret below
        raise InputError(f"{source}: {text.strip()!r} is not a valid requirement: {reason}") from None
    if req.url:
        raise InputError(f"{source}: {text.strip()!r}: URL requirements cannot be built from the upstream")
    if len(req.name) > NAME_MAX:
        raise InputError(f"{source}: {req.name[:40]}...: a project name is at most {NAME_MAX} characters")
    return Wanted(req.name, req.specifier if str(req.specifier) else None, source)


def read_requirements(path: Path) -> list[Wanted]:
    """The requirements of a pip requirements file; options and nested files are refused by name."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read requirements: {exc}") from None
    wanted = []
    for number, line in enumerate(lines, 1):
        text = line.split(" #", 1)[0].strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith("-"):
            raise InputError(f"{path}:{number}: pip option {text.split()[0]!r} is not supported")
        found = parse_wanted(text, f"{path}:{number}")
        # A pinned file means "what pip would install": the newest version that matches.
        wanted.append(found if found.specifier else Wanted(found.name, SpecifierSet(), found.source))
    return wanted
