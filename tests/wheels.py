"""Tiny hand-made wheels for tests that need a wheel but not a build, honest or hostile."""

from __future__ import annotations

import base64
import hashlib
import stat
import struct
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path


def record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def make_wheel(
    folder: Path,
    name: str,
    version: str,
    *,
    tag: str = "py3-none-any",
    requires: tuple[str, ...] = (),
    requires_python: str | None = None,
    metadata_name: str | None = None,
    extra: Mapping[str, bytes] = {},
    unrecorded: Mapping[str, bytes] = {},
    record_rows: Mapping[str, str] = {},
    symlinks: Mapping[str, str] = {},
    duplicate: str | None = None,
    filename: str | None = None,
    wheel_tags: tuple[str, ...] | None = None,
) -> Path:
    """Write ``name-version-<tag>.whl`` with one module into ``folder``.

    The rest makes it hostile: ``extra`` members (listed in RECORD), ``unrecorded`` ones (not),
    ``record_rows`` replacing RECORD rows by member, ``symlinks`` (member -> target, as a
    symbolic link), a ``duplicate`` member written twice, another ``filename``, and WHEEL
    ``Tag:`` lines other than ``tag``.
    """
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    lines = ["Metadata-Version: 2.1", f"Name: {metadata_name or name}", f"Version: {version}"]
    lines += [f"Requires-Dist: {r}" for r in requires]
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    tags = wheel_tags if wheel_tags is not None else _expand(tag)
    wheel_info = "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
    wheel_info += "".join(f"Tag: {t}\n" for t in tags)
    files = {
        f"{dist}.py": f"VERSION = {version!r}\n".encode(),
        **extra,
        f"{info}/METADATA": ("\n".join(lines) + "\n").encode(),
        f"{info}/WHEEL": wheel_info.encode(),
    }
    record = [record_rows.get(p, record_line(p, d)) for p, d in files.items()]
    record += [record_rows.get(p, record_line(p, t.encode())) for p, t in symlinks.items()]
    record.append(f"{info}/RECORD,,")
    path = folder / (filename or f"{dist}-{version}-{tag}.whl")
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate name we write on purpose
        for member, data in {**files, **unrecorded}.items():
            archive.writestr(_info(member), data)
        for member, target in symlinks.items():
            link = _info(member)
            link.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(link, target)
        if duplicate is not None:
            archive.writestr(_info(duplicate), b"the second copy\n")
        archive.writestr(_info(f"{info}/RECORD"), "\n".join(record) + "\n")
    return path


def _info(member: str) -> zipfile.ZipInfo:
    """A member with a fixed time stamp: the same wheel made twice has the same bytes."""
    info = zipfile.ZipInfo(member, date_time=(2024, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    return info


def _expand(tag: str) -> tuple[str, ...]:
    python, abi, platform = tag.split("-")
    return tuple(
        f"{p}-{a}-{pl}" for p in python.split(".") for a in abi.split(".") for pl in platform.split(".")
    )


def make_metadata_bomb(folder: Path, name: str, version: str, size: int, tag: str = "py3-none-any") -> Path:
    """A wheel whose METADATA unpacks to ``size`` bytes from a few hundred kilobytes, written in
    chunks (the test never holds it whole), with an honest RECORD."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    head = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nDescription: ".encode()
    filler = b"A" * (1 << 20)
    digest = hashlib.sha256(head)
    path = folder / f"{dist}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open(f"{info}/METADATA", "w", force_zip64=True) as member:
            member.write(head)
            written = len(head)
            while written < size:
                chunk = filler[: size - written]
                member.write(chunk)
                digest.update(chunk)
                written += len(chunk)
        wheel_info = f"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: {tag}\n".encode()
        archive.writestr(f"{info}/WHEEL", wheel_info)
        hash_text = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
        rows = [f"{info}/METADATA,sha256={hash_text},{size}", record_line(f"{info}/WHEEL", wheel_info)]
        archive.writestr(f"{info}/RECORD", "\n".join([*rows, f"{info}/RECORD,,"]) + "\n")
    return path


def declare_size(path: Path, member: str, size: int) -> None:
    """Make the archive's central directory lie about ``member``'s uncompressed size."""
    data = bytearray(path.read_bytes())
    encoded = member.encode()
    # Walk the central directory to the member's entry: fixed 46-byte headers, then name/extra/comment.
    offset = data.find(b"PK\x01\x02")
    while offset != -1:
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, offset + 28)
        if bytes(data[offset + 46 : offset + 46 + name_len]) == encoded:
            struct.pack_into("<I", data, offset + 24, size)
            path.write_bytes(bytes(data))
            return
        offset = data.find(b"PK\x01\x02", offset + 46 + name_len + extra_len + comment_len)
    raise AssertionError(f"{member} not found in the central directory of {path}")
