"""Prove a wheel is what its build says it is: name, version, tags, every member, size and sha256.

A build's output is hostile until proven otherwise. Every member is read through the ``wheel``
package's ``WheelFile``, which checks each one against its RECORD hash; sizes are bounded before
anything is decompressed, and nothing is read whole past a cap, whatever the archive declares.
"""

from __future__ import annotations

import csv
import dataclasses
import email.parser
import email.policy
import hashlib
import io
import re
import stat
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from packaging.tags import Tag
from packaging.utils import (
    InvalidWheelFilename,
    canonicalize_name,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version
from wheel.wheelfile import WheelError, WheelFile

from ..abi import AbiTags
from ..errors import ArrivalError, VerifyError
from ..files import CHUNK, sha256_of
from .metadata import check_metadata
from .tags import BuildFacts, check_tags

_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+!-]*\.whl$")
_DRIVE = re.compile(r"^[A-Za-z]:")
RETAG_TIMEOUT = 600.0


@dataclass(frozen=True)
class Limits:
    """How large a wheel may unpack; past these it is refused before it can exhaust the controller."""

    metadata: int = 4 << 20  # METADATA and WHEEL: kept in memory and in the database
    record: int = 32 << 20  # RECORD: parsed whole by WheelFile
    total: int = 2 << 30  # every member together, uncompressed
    members: int = 200_000
    # A member this much larger than its compressed form is a zip bomb (deflate reaches ~1000:1
    # on zeros; real files stay far below) once it unpacks to more than ``ratio_floor`` bytes.
    ratio: int = 200
    ratio_floor: int = 1 << 20


LIMITS = Limits()


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
    # What it needs from apt, as the builder found it: [{"library", "path", "package"}, ...].
    deps: list[dict[str, str | None]] | None = None


def check_filename(filename: str) -> str:
    """``filename`` if it is a plain wheel file name (no path parts); VerifyError otherwise."""
    if not _PLAIN_NAME.match(filename) or ".." in filename:
        raise VerifyError(f"{filename!r}: not a plain wheel file name")
    try:
        parse_wheel_filename(filename)
    except InvalidWheelFilename as exc:
        raise VerifyError(f"{filename!r}: {exc}") from None
    return filename


def check_arrival(path: Path, size: int, sha256: str) -> tuple[int, str]:
    """Size and sha256 of ``path``; ArrivalError (the builder's fault) if not what it reported."""
    actual_size, actual_sha = sha256_of(path)
    if actual_size != size:
        raise ArrivalError(f"{path.name}: {actual_size} bytes, the builder reported {size}")
    if actual_sha != sha256:
        raise ArrivalError(f"{path.name}: sha256 {actual_sha} differs from the builder's {sha256}")
    return actual_size, actual_sha


def _check_member_name(filename: str, name: str) -> None:
    if (
        not name
        or "\\" in name
        or "\0" in name
        or name.startswith("/")
        or _DRIVE.match(name)
        or any(part in ("", ".", "..") for part in name.removesuffix("/").split("/"))
    ):
        raise VerifyError(f"{filename}: member {name!r} is not a plain relative path")


def _check_structure(
    filename: str, archive: zipfile.ZipFile, limits: Limits, dist_info: str, file_size: int
) -> None:
    """Names, types and declared sizes of every member, and the archive's extent in the file,
    before a byte is decompressed."""
    infos = archive.infolist()
    if len(infos) > limits.members:
        raise VerifyError(f"{filename}: {len(infos)} members, more than {limits.members}")
    seen: set[str] = set()
    total = 0
    for info in infos:
        name = info.filename
        _check_member_name(filename, name)
        if name in seen:
            raise VerifyError(f"{filename}: member {name!r} appears twice")
        seen.add(name)
        kind = stat.S_IFMT(info.external_attr >> 16)
        if kind == stat.S_IFLNK:
            raise VerifyError(f"{filename}: member {name!r} is a symbolic link")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise VerifyError(f"{filename}: member {name!r} is not a regular file (mode {kind:o})")
        if info.flag_bits & 0x1:
            raise VerifyError(f"{filename}: member {name!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise VerifyError(f"{filename}: member {name!r} uses compression method {info.compress_type}")
        cap = _cap(name, dist_info, limits)
        if info.file_size > cap:
            raise VerifyError(f"{filename}: member {name!r} unpacks to {info.file_size} bytes, over {cap}")
        if info.file_size > limits.ratio_floor and info.file_size > limits.ratio * max(info.compress_size, 1):
            raise VerifyError(
                f"{filename}: member {name!r} unpacks to {info.file_size} bytes from {info.compress_size}"
                f" (a ratio over {limits.ratio})"
            )
        total += info.file_size
        if total > limits.total:
            raise VerifyError(f"{filename}: members unpack to more than {limits.total} bytes")
    dist_infos = {n.split("/", 1)[0] for n in seen if n.split("/", 1)[0].endswith(".dist-info")}
    if len(dist_infos) != 1:
        raise VerifyError(f"{filename}: expected one .dist-info folder, found {sorted(dist_infos)}")
    _check_extent(filename, archive, infos, file_size)


# What a member may take in the file besides its compressed data: a local header and a central
# one (46 bytes with its name, extra field and comment; the local one about the same), a data
# descriptor (up to 24 bytes), and some slack for extra fields the two headers do not share.
_MEMBER_SLACK = 128
_END_SLACK = 22 + 20 + 56 + 65535  # the end record, ZIP64's locator and record, a comment


def _check_extent(
    filename: str, archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], file_size: int
) -> None:
    """Every byte of the file belongs to a member or to the archive's directory: nothing hides
    before the first member (a zip is read from its end: pip would install such a wheel, and a
    browser or another tool might read what comes first) and nothing pads the file beyond what
    its members account for (the limits above bound those)."""
    first = min((info.header_offset for info in infos), default=0)
    if first != 0:
        raise VerifyError(f"{filename}: {first} bytes before the first member belong to none")
    accounted = (
        sum(
            info.compress_size
            + 2 * (46 + len(info.orig_filename.encode()) + len(info.extra) + len(info.comment))
            + _MEMBER_SLACK
            for info in infos
        )
        + len(archive.comment)
        + _END_SLACK
    )
    if file_size > accounted:
        raise VerifyError(f"{filename}: {file_size} bytes, more than its members account for ({accounted})")


def _cap(name: str, dist_info: str, limits: Limits) -> int:
    if name.lower() in (f"{dist_info}/metadata".lower(), f"{dist_info}/wheel".lower()):
        return limits.metadata
    if name.lower() == f"{dist_info}/record".lower():
        return limits.record
    return limits.total


@dataclass(frozen=True)
class _Contents:
    dist_info: str
    metadata: bytes
    wheel_info: bytes


def _read_members(path: Path, limits: Limits) -> _Contents:
    """Read every member through WheelFile (RECORD hashes), checking RECORD's sizes and coverage."""
    filename = path.name
    with zipfile.ZipFile(path) as plain:
        dist_info_guess = "-".join(filename.split("-")[:2]) + ".dist-info"
        _check_structure(filename, plain, limits, dist_info_guess, path.stat().st_size)
    with WheelFile(path) as archive:
        dist_info = archive.dist_info_path
        record_path = archive.record_path
        kept: dict[str, bytes] = {}
        sizes: dict[str, int] = {}
        total = 0
        for info in archive.infolist():
            if info.is_dir():
                continue
            cap = _cap(info.filename, dist_info, limits)
            keep = cap < limits.total
            buffer = bytearray()
            read = 0
            with archive.open(info) as member:
                # Bounded reads: the declared size is not trusted, the cap is enforced as we go.
                while chunk := member.read(min(CHUNK, cap - read + 1)):
                    read += len(chunk)
                    total += len(chunk)
                    if read > cap:
                        raise VerifyError(f"{filename}: member {info.filename!r} unpacks to more than {cap}")
                    if total > limits.total:
                        raise VerifyError(f"{filename}: members unpack to more than {limits.total} bytes")
                    if keep:
                        buffer += chunk
            sizes[info.filename] = read
            if keep:
                kept[info.filename] = bytes(buffer)
    if record_path not in kept:
        raise VerifyError(f"{filename}: no {dist_info}/RECORD")
    _check_record(filename, kept[record_path], record_path, sizes)
    metadata, wheel_info = kept.get(f"{dist_info}/METADATA"), kept.get(f"{dist_info}/WHEEL")
    if metadata is None or wheel_info is None:
        raise VerifyError(f"{filename}: {dist_info} lacks METADATA or WHEEL")
    return _Contents(dist_info, metadata, wheel_info)


def _check_record(filename: str, record: bytes, record_path: str, sizes: dict[str, int]) -> None:
    """Every RECORD row names a member once, with its size (WheelFile checked the hashes)."""
    try:
        rows = list(csv.reader(io.StringIO(record.decode("utf-8"), newline="")))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise VerifyError(f"{filename}: RECORD is not valid UTF-8 CSV ({exc})") from None
    listed: set[str] = set()
    for row in rows:
        if len(row) != 3:
            raise VerifyError(f"{filename}: RECORD row {row!r} does not have 3 fields")
        member, digest, size = row
        _check_member_name(filename, member)
        if member in listed:
            raise VerifyError(f"{filename}: RECORD lists {member!r} twice")
        listed.add(member)
        if member not in sizes:
            raise VerifyError(f"{filename}: RECORD lists {member!r}, which is not in the archive")
        if member == record_path:
            continue
        if not digest.startswith("sha256=") or not size.isdigit():
            raise VerifyError(f"{filename}: RECORD entry for {member!r} lacks a sha256 or a size")
        if int(size) != sizes[member]:
            raise VerifyError(f"{filename}: {member!r} is {sizes[member]} bytes, RECORD says {size}")
    unlisted = sorted(set(sizes) - listed)
    if unlisted:
        raise VerifyError(f"{filename}: {unlisted[0]!r} is not listed in RECORD")


def _check_dist_info(filename: str, contents: _Contents, name: str, version: Version) -> None:
    folder = contents.dist_info.removesuffix(".dist-info")
    folder_name, _, folder_version = folder.rpartition("-")
    try:
        same_version = Version(folder_version) == version
    except InvalidVersion:
        same_version = False
    if canonicalize_name(folder_name) != name or not same_version:
        raise VerifyError(f"{filename}: .dist-info folder {folder!r} is for another project or version")


def _check_wheel_info(filename: str, raw: bytes, tags: frozenset[Tag], build: str | None) -> None:
    """The WHEEL file agrees with the file name: version 1.x, the same tags, the same build tag."""
    info = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw)
    wheel_version = info.get("Wheel-Version", "")
    if not re.fullmatch(r"1\.\d+", wheel_version.strip()):
        raise VerifyError(f"{filename}: WHEEL has Wheel-Version {wheel_version!r}, not 1.x")
    declared = {str(t).strip() for t in info.get_all("Tag", [])}
    if declared != {str(t) for t in tags}:
        raise VerifyError(f"{filename}: WHEEL declares tags {sorted(declared)}, the file name others")
    wheel_build = info.get("Build")
    if (wheel_build.strip() if wheel_build else None) != build:
        raise VerifyError(f"{filename}: WHEEL says build {wheel_build!r}, the file name {build!r}")


def inspect_wheel(
    path: Path,
    *,
    name: str | None = None,
    version: str | None = None,
    abi: AbiTags | None = None,
    size: int | None = None,
    sha256: str | None = None,
    facts: BuildFacts | None = None,
    limits: Limits = LIMITS,
) -> Wheel:
    """Verify the wheel at ``path``: as reported (``size``, ``sha256``: ArrivalError otherwise),
    then for the expected project, version and ABI, and every member against RECORD (VerifyError).
    A tag that does not fit ``abi`` is the builder's fault (TagError) only where the agent's
    ``facts`` show that the builder made it (``tags.fault``)."""
    filename = check_filename(path.name)
    if size is not None and sha256 is not None:
        actual_size, actual_sha = check_arrival(path, size, sha256)
    else:
        actual_size, actual_sha = sha256_of(path)
    file_name, file_version, build, tags = parse_wheel_filename(filename)
    if name is not None and file_name != canonicalize_name(name):
        raise VerifyError(f"{filename}: built for project {file_name!r}, expected {name!r}")
    if version is not None and file_version != Version(version):
        raise VerifyError(f"{filename}: built as version {file_version}, expected {version}")
    if abi is not None:
        check_tags(filename, tags, abi, facts)
    try:
        contents = _read_members(path, limits)
    except (WheelError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as exc:
        raise VerifyError(f"{filename}: not a valid wheel archive ({exc})") from None
    except NotImplementedError as exc:  # an unsupported ZIP feature
        raise VerifyError(f"{filename}: not a valid wheel archive ({exc})") from None
    _check_dist_info(filename, contents, file_name, file_version)
    build_tag = f"{build[0]}{build[1]}" if build else None
    _check_wheel_info(filename, contents.wheel_info, tags, build_tag)
    text, requires_python = check_metadata(filename, contents.metadata, file_name, file_version)
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
        requires_python=requires_python,
        metadata=text,
        metadata_sha256=hashlib.sha256(contents.metadata).hexdigest(),
    )


def _retagged(wheel: Wheel, what: str, *options: str) -> Wheel:
    """The wheel that ``wheel tags OPTIONS`` (the wheel package's own command) makes of ``wheel``,
    beside it, read and verified; ``what`` names the new tags in the error."""
    proc = subprocess.run(
        [sys.executable, "-m", "wheel", "tags", *options, str(wheel.path)],
        capture_output=True,
        text=True,
        timeout=RETAG_TIMEOUT,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if proc.returncode != 0:
        raise VerifyError(f"{wheel.filename}: tagging it with {what} failed: {proc.stderr.strip()}")
    new_name = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    return inspect_wheel(
        wheel.path.with_name(check_filename(new_name)), name=wheel.name, version=wheel.version
    )


def with_build_tag(wheel: Wheel, build: int) -> Wheel:
    """The same wheel under build tag ``build`` (file name and WHEEL's ``Build:``), verified again.

    Uses ``wheel tags --build``, the wheel package's own command; the original file is removed.
    """
    tagged = _retagged(wheel, f"build tag {build}", "--remove", "--build", str(build))
    same = (tagged.python_tag, tagged.abi_tag, tagged.platform_tag, tagged.metadata_sha256)
    if same != (wheel.python_tag, wheel.abi_tag, wheel.platform_tag, wheel.metadata_sha256):
        raise VerifyError(f"{wheel.filename}: {tagged.filename} is not the same wheel with a build tag")
    return dataclasses.replace(tagged, deps=wheel.deps)


def with_platform(wheel: Wheel, platform: str) -> Wheel:
    """A copy of ``wheel`` beside it for ``platform`` (e.g. a ``linux_armv7l`` wheel built on an
    ARMv6 userland, also published as ``linux_armv6l``), verified.

    Uses ``wheel tags --platform-tag``, the wheel package's own command, so that the WHEEL
    file's tags and RECORD are rewritten; the copy has its own hash and ``.metadata``.
    """
    copy = _retagged(wheel, platform, "--platform-tag", platform)
    same = (copy.python_tag, copy.abi_tag, copy.metadata_sha256)
    if same != (wheel.python_tag, wheel.abi_tag, wheel.metadata_sha256) or copy.platform_tag != platform:
        raise VerifyError(f"{wheel.filename}: {copy.filename} is not the same wheel for {platform}")
    return dataclasses.replace(copy, deps=wheel.deps)
