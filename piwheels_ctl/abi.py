"""Which ABIs a wheel installs on: the rules that decide what still needs a build."""

from __future__ import annotations

import re
from dataclasses import dataclass

from packaging.tags import Tag
from packaging.utils import parse_wheel_filename

_INTERPRETER = re.compile(r"^(py|cp|pp)(\d)(\d*)$")
_MANYLINUX = re.compile(r"^(?:many|musl)linux_\d+_\d+_(.+)$|^manylinux(?:1|2010|2014)_(.+)$")


@dataclass(frozen=True)
class AbiTags:
    """The tags a builder's interpreter gives the compiled wheels it builds."""

    python_tag: str  # cp311, pp310
    abi_tag: str  # cp311, pypy310_pp73, cp37m
    platform_tag: str  # linux_x86_64, linux_armv7l

    @property
    def tag(self) -> str:
        return f"{self.python_tag}-{self.abi_tag}-{self.platform_tag}"

    @property
    def implementation(self) -> str:
        return self.python_tag[:2]

    @property
    def version(self) -> tuple[int, int]:
        digits = self.python_tag[2:]
        return int(digits[0]), int(digits[1:] or 0)


def _interpreter_matches(interpreter: str, abi: AbiTags) -> bool:
    match = _INTERPRETER.match(interpreter)
    if not match:
        return False
    impl, major, minor = match.group(1), int(match.group(2)), match.group(3)
    if impl != "py" and impl != abi.implementation:
        return False
    if major != abi.version[0]:
        return False
    if not minor:
        return True
    # pyXY-none-any installs on X.Y and later minors; cpXY/ppXY only on X.Y itself.
    return int(minor) <= abi.version[1] if impl == "py" else int(minor) == abi.version[1]


def _platform_matches(platform: str, abi: AbiTags) -> bool:
    if platform in ("any", abi.platform_tag):
        return True
    match = _MANYLINUX.match(platform)
    arch = match and (match.group(1) or match.group(2))
    return bool(arch) and abi.platform_tag == f"linux_{arch}"


def tag_covers(tag: Tag, abi: AbiTags) -> bool:
    """True when a wheel with ``tag`` installs on the interpreter ``abi`` describes."""
    if not _platform_matches(tag.platform, abi):
        return False
    if tag.abi == "abi3":
        match = _INTERPRETER.match(tag.interpreter)
        return (
            abi.implementation == "cp"
            and match is not None
            and match.group(1) == "cp"
            and int(match.group(2)) == abi.version[0]
            and int(match.group(3) or 0) <= abi.version[1]
        )
    if tag.abi == "none":
        return _interpreter_matches(tag.interpreter, abi)
    return tag.abi == abi.abi_tag and tag.interpreter == abi.python_tag


def wheel_covers(filename: str, abi: AbiTags) -> bool:
    """True when the wheel ``filename`` installs on ``abi`` (any of its compressed tags does)."""
    _name, _version, _build, tags = parse_wheel_filename(filename)
    return any(tag_covers(tag, abi) for tag in tags)
