"""A built wheel's METADATA checked before it is published: its name and version, and the
fields pip reads from it and the index repeats (Requires-Python, Requires-Dist), valid and bounded."""

from __future__ import annotations

from packaging.metadata import parse_email
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import InvalidVersion, Version

from ..db.models import File
from ..errors import VerifyError

# What the index keeps of a wheel's Requires-Python (files.requires_python; PostgreSQL is strict).
REQUIRES_PYTHON_MAX = int(File.requires_python.type.length)
SHOWN = 80  # how much of a hostile value an error message repeats


def check_metadata(
    filename: str, raw: bytes, name: NormalizedName, version: Version
) -> tuple[str, str | None]:
    """The METADATA's text and its Requires-Python (None: none given); VerifyError when it is not
    UTF-8, names another project or version, or has a Requires-Python or Requires-Dist that pip
    could not read the same way (invalid, given twice, longer than the index keeps)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise VerifyError(f"{filename}: METADATA is not UTF-8") from None
    fields, unparsed = parse_email(raw)
    meta_name, meta_version = fields.get("name"), fields.get("version")
    if meta_name is None or canonicalize_name(meta_name) != name:
        raise VerifyError(f"{filename}: METADATA names project {meta_name!r}")
    try:
        if meta_version is None or Version(meta_version) != version:
            raise VerifyError(f"{filename}: METADATA says version {meta_version!r}")
    except InvalidVersion:
        raise VerifyError(f"{filename}: METADATA version {meta_version!r} is not valid") from None
    if "requires-python" in unparsed:  # given more than once: which one pip reads is not ours to guess
        raise VerifyError(
            f"{filename}: METADATA gives Requires-Python {len(unparsed['requires-python'])} times"
        )
    requires_python = fields.get("requires_python")
    if requires_python is not None:
        _check_requires_python(filename, requires_python)
    for line in fields.get("requires_dist", []):
        try:
            Requirement(line)
        except InvalidRequirement:
            raise VerifyError(f"{filename}: METADATA Requires-Dist {line[:SHOWN]!r} is not valid") from None
    return text, requires_python or None


def _check_requires_python(filename: str, value: str) -> None:
    if len(value) > REQUIRES_PYTHON_MAX:
        raise VerifyError(
            f"{filename}: METADATA Requires-Python is {len(value):,} characters long,"
            f" more than the {REQUIRES_PYTHON_MAX} the index keeps"
        )
    try:
        SpecifierSet(value)
    except InvalidSpecifier:
        raise VerifyError(f"{filename}: METADATA Requires-Python {value[:SHOWN]!r} is not valid") from None
