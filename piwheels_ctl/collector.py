"""Prove a wheel is what its build says it is: a plain wheel name, matching METADATA, size, sha256."""

from __future__ import annotations

import hashlib
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from packaging.metadata import parse_email
from packaging.utils import (
    InvalidWheelFilename,
    canonicalize_name,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from .errors import IntegrityError, VerifyError

_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+!-]*\.whl$")
_METADATA = re.compile(r"^([^/]+)\.dist-info/METADATA$")


@dataclass(frozen=True)
class Wheel:
    """A verified wheel file and what the index needs to know about it."""

    path: Path
    filename: str
    name: str  # canonical project name
    version: str
    size: int
    sha256: str
    python_tag: str
    abi_tag: str
    platform_tag: str
    requires_python: str | None
    metadata: str
    metadata_sha256: str


def check_filename(filename: str) -> str:
    """``filename`` if it is a plain wheel file name (no path parts); VerifyError otherwise."""
    if not _PLAIN_NAME.match(filename) or ".." in filename:
        raise VerifyError(f"{filename!r}: not a plain wheel file name")
    try:
        parse_wheel_filename(filename)
    except InvalidWheelFilename as exc:
        raise VerifyError(f"{filename!r}: {exc}") from None
    return filename


def sha256_of(path: Path) -> tuple[int, str]:
    """Size and sha256 of the file at ``path``, read once."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _read_metadata(path: Path, dist_name: str) -> bytes:
    try:
        with zipfile.ZipFile(path) as archive:
            entries = [n for n in archive.namelist() if _METADATA.match(n)]
            if len(entries) != 1:
                raise VerifyError(f"{path.name}: expected one .dist-info/METADATA, found {len(entries)}")
            dist_info = _METADATA.match(entries[0])
            assert dist_info is not None
            if canonicalize_name(dist_info.group(1).split("-")[0]) != dist_name:
                raise VerifyError(
                    f"{path.name}: .dist-info folder {dist_info.group(1)!r} is for another project"
                )
            return archive.read(entries[0])
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise VerifyError(f"{path.name}: not a valid wheel archive ({exc})") from None


def inspect_wheel(
    path: Path,
    *,
    name: str | None = None,
    version: str | None = None,
    size: int | None = None,
    sha256: str | None = None,
) -> Wheel:
    """Verify the wheel at ``path`` against the expected project, version, size and hash."""
    filename = check_filename(path.name)
    file_name, file_version, _build, _tags = parse_wheel_filename(filename)
    if name is not None and file_name != canonicalize_name(name):
        raise VerifyError(f"{filename}: built for project {file_name!r}, expected {name!r}")
    if version is not None and file_version != Version(version):
        raise VerifyError(f"{filename}: built as version {file_version}, expected {version}")
    actual_size, actual_sha = sha256_of(path)
    if size is not None and actual_size != size:
        raise IntegrityError(f"{filename}: {actual_size} bytes, the builder reported {size}")
    if sha256 is not None and actual_sha != sha256:
        raise IntegrityError(f"{filename}: sha256 {actual_sha} differs from the builder's {sha256}")
    raw = _read_metadata(path, file_name)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise VerifyError(f"{filename}: METADATA is not UTF-8") from None
    fields, _unparsed = parse_email(raw)
    meta_name, meta_version = fields.get("name"), fields.get("version")
    if meta_name is None or canonicalize_name(meta_name) != file_name:
        raise VerifyError(f"{filename}: METADATA names project {meta_name!r}")
    try:
        if meta_version is None or Version(meta_version) != file_version:
            raise VerifyError(f"{filename}: METADATA says version {meta_version!r}")
    except InvalidVersion:
        raise VerifyError(f"{filename}: METADATA version {meta_version!r} is not valid") from None
    python_tag, abi_tag, platform_tag = filename[: -len(".whl")].split("-")[-3:]
    return Wheel(
        path=path,
        filename=filename,
        name=file_name,
        version=str(file_version),
        size=actual_size,
        sha256=actual_sha,
        python_tag=python_tag,
        abi_tag=abi_tag,
        platform_tag=platform_tag,
        requires_python=fields.get("requires_python"),
        metadata=text,
        metadata_sha256=hashlib.sha256(raw).hexdigest(),
    )
