"""Which ABIs a wheel installs on: the rules that decide what still needs a build."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass

from packaging import tags
from packaging.specifiers import InvalidSpecifier, SpecifierSet
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


def runs_on(requires_python: str | None, abi: AbiTags) -> bool:
    """Whether a version with ``requires_python`` installs on the interpreter of ``abi``."""
    if not requires_python:
        return True
    try:
        spec = SpecifierSet(requires_python)
    except InvalidSpecifier:
        return True  # pip ignores a broken Requires-Python as well; let the build decide
    major, minor = abi.version
    # The ABI knows its minor version only: stand for the newest patch release of it.
    return spec.contains(f"{major}.{minor}.999", prereleases=True)


def marker_environment(abi: AbiTags) -> dict[str, str]:
    """The PEP 508 marker values of the interpreter ``abi`` describes, on Linux (the newest
    patch release of its minor version stands for it, as in ``runs_on``)."""
    major, minor = abi.version
    pypy = abi.implementation == "pp"
    return {
        "python_version": f"{major}.{minor}",
        "python_full_version": f"{major}.{minor}.999",
        "implementation_name": "pypy" if pypy else "cpython",
        "platform_python_implementation": "PyPy" if pypy else "CPython",
        "sys_platform": "linux" if major >= 3 else "linux2",
        "platform_system": "Linux",
        "os_name": "posix",
        "platform_machine": abi.platform_tag.removeprefix("linux_"),
    }


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


# The first glibc of each legacy manylinux name, and the architectures each was defined for.
_LEGACY_MANYLINUX = (
    ("manylinux2014", (2, 17), ("x86_64", "i686", "aarch64", "armv7l", "ppc64", "ppc64le", "s390x")),
    ("manylinux2010", (2, 12), ("x86_64", "i686")),
    ("manylinux1", (2, 5), ("x86_64", "i686")),
)


# The glibc that decides which manylinux wheels run on an ABI: one for every platform
# (``manylinux_glibc``), or the builders' own by platform tag ({"linux_aarch64": (2, 36)}).
Glibc = tuple[int, int] | Mapping[str, tuple[int, int]] | None


def glibc_for(glibc: Glibc, platform_tag: str) -> tuple[int, int] | None:
    """The glibc of ``glibc`` for wheels of ``platform_tag`` (None: not known there)."""
    if glibc is None or isinstance(glibc, tuple):
        return glibc
    return glibc.get(platform_tag)


def parse_glibc(text: str) -> tuple[int, int] | None:
    """``"2.36"`` as (2, 36); None for ``""`` (the builders' glibc is not known)."""
    if not text:
        return None
    major, _, minor = text.partition(".")
    return int(major), int(minor)


def _platforms(abi: AbiTags, glibc: tuple[int, int] | None) -> list[str]:
    """The platform tags a wheel for ``abi`` may carry, its own first: with ``glibc`` known, the
    ``manylinux`` tags of the ABI's architecture that a glibc that new runs (PEP 600)."""
    platforms = [abi.platform_tag]
    arch = abi.platform_tag.removeprefix("linux_")
    if glibc is None or arch == abi.platform_tag:
        return platforms
    major, newest = glibc
    platforms += [f"manylinux_{major}_{minor}_{arch}" for minor in range(newest, -1, -1)]
    platforms += [
        f"{name}_{arch}" for name, needs, arches in _LEGACY_MANYLINUX if needs <= glibc and arch in arches
    ]
    return platforms


@functools.lru_cache(maxsize=256)
def supported_tags(abi: AbiTags, glibc: tuple[int, int] | None = None) -> frozenset[Tag]:
    """Every tag of a wheel that installs on ``abi``, as ``packaging.tags`` lists them for that
    interpreter, on the ABI's own platform and (``glibc`` known) the manylinux ones it runs."""
    platforms = _platforms(abi, glibc)
    version = abi.version
    if abi.implementation == "cp":
        specific = tags.cpython_tags(version, abis=[abi.abi_tag], platforms=platforms)
    else:
        specific = tags.generic_tags(abi.python_tag, abis=[abi.abi_tag], platforms=platforms)
    compatible = tags.compatible_tags(version, interpreter=abi.python_tag, platforms=platforms)
    return frozenset([*specific, *compatible])


def upstream_covers(filename: str, abi: AbiTags, glibc: Glibc = None) -> bool:
    """True when the upstream's wheel ``filename`` installs on ``abi`` (so it needs no build):
    ``manylinux`` wheels only when the glibc of the ABI's platform is known and new enough."""
    _name, _version, _build, file_tags = parse_wheel_filename(filename)
    return not file_tags.isdisjoint(supported_tags(abi, glibc_for(glibc, abi.platform_tag)))
