"""What the user asks to build: ``NAME[specifier]`` arguments and pip requirements files, parsed."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from ..errors import InputError
from .columns import NAME_MAX

# pip's options that name another requirements file to read, as pip reads them (relative paths
# from the file's own folder).
_NESTED = ("-r", "--requirement")
_EDITABLE = ("-e", "--editable")
_UPSTREAM_ONLY = "only projects of the upstream are built"
# A line of a requirements file that is a path or URL to install, not a project of the upstream.
_LOCAL = re.compile(
    r"^(?:\.{1,2}(?:/|$)|/|[a-z][a-z0-9+.-]*://|[a-z]+\+[a-z]+:)|\.(?:whl|tar\.gz|zip)$", re.IGNORECASE
)
# pip's own per-requirement options that may follow a requirement on its line (pip-compile's
# ``--hash``): they change how pip installs, not what.
_TRAILING_OPTION = re.compile(r"\s+--?[a-z][a-z-]*(?:[= ]\S+)?(?=\s|$)", re.IGNORECASE)


@dataclass(frozen=True)
class Wanted:
    """A project asked for by the user, with the versions wanted (None: every version)."""

    name: str  # as given
    specifier: SpecifierSet | None
    source: str  # where it came from, for error messages
    marker: Marker | None = None  # the requirement's environment marker, evaluated per ABI

    @property
    def canonical(self) -> str:
        return canonicalize_name(self.name)


@dataclass
class RequirementsFile:
    """What a requirements file asks for: its requirements, what was left out (a warning each)
    and the lines that are not requirements (an error each, all of them)."""

    wanted: list[Wanted] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)


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
    return Wanted(req.name, req.specifier if str(req.specifier) else None, source, req.marker)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """The lines of a requirements file as pip joins them (a trailing backslash continues a
    line), comments removed, each with the number of the line it starts on."""
    lines: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw)
        if pending is not None:
            number, line = pending[0], pending[1] + " " + line.strip()
        if line.endswith("\\"):
            pending = (number, line[:-1])
            continue
        pending = None
        if line.strip():
            lines.append((number, line.strip()))
    if pending is not None and pending[1].strip():
        lines.append((pending[0], pending[1].strip()))
    return lines


def _read(path: Path, into: RequirementsFile, seen: set[Path]) -> None:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read requirements: {exc}") from None
    seen.add(path.resolve())
    for number, line in _logical_lines(text):
        where = f"{path}:{number}"
        if line.startswith("-"):
            option, _, value = line.replace("=", " ", 1).partition(" ")
            if option in _NESTED and value.strip():
                nested = path.parent / value.strip()
                if nested.resolve() not in seen:
                    _read(nested, into, seen)
                continue
            if option in _EDITABLE:
                into.skipped.append(f"{where}: editable {value.strip()!r} skipped: {_UPSTREAM_ONLY}")
            else:
                into.skipped.append(
                    f"{where}: pip option {option!r} skipped: the farm builds from its upstream"
                )
            continue
        if _LOCAL.match(line) or " @ " in line:
            into.skipped.append(
                f"{where}: {shlex.split(line)[0]!r} skipped: only projects of the upstream are built"
            )
            continue
        try:
            found = parse_wanted(_TRAILING_OPTION.sub("", line), where)
        except InputError as exc:
            into.bad.append(str(exc))
            continue
        # A requirement means "what pip would install": the newest version that matches.
        into.wanted.append(
            found if found.specifier else Wanted(found.name, SpecifierSet(), where, found.marker)
        )


def read_requirements(path: Path) -> RequirementsFile:
    """The requirements of a pip requirements file, nested ``-r`` files followed; pip's options,
    editable, path and URL lines are skipped with a warning each, and every bad line is kept."""
    found = RequirementsFile()
    _read(path, found, set())
    return found
