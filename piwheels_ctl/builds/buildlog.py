"""A build's log as the log store keeps it: a header first, then the log with paths relative to
the build's folder and none of the controller's own (the site shows logs to anyone)."""

from __future__ import annotations

import gzip
import os
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..db.models import Build, BuildStatus
from ..files import atomic_file

# The build's own folder on any builder: ``<work root>/build-<random>/build`` (agent.workdirs).
BOX = re.compile(rb"(?<![\w.-])(?:/[^\s/'\"`:;,=()\[\]]+)*/build-[A-Za-z0-9_]+/build(?=[/\s'\"`:;,)\]]|$)")
COMMAND_WIDTH = 78


def store_log(logs_dir: Path, build: Build, log: Path | None) -> str | None:
    """Gzip a build's log into the log store, under its header and with the controller's paths
    rewritten; the path is relative to ``logs_dir``."""
    if log is None or not log.exists():
        return None
    relative = Path(build.version.project.name) / f"{build.id}.log.gz"
    target = logs_dir / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    paths = controller_paths(logs_dir.parent)
    with (
        open(log, "rb") as src,
        atomic_file(target) as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6) as dst,
    ):
        first = src.readline()
        command = first[2:].rstrip(b"\n") if first.startswith(b"$ ") else None
        for text in header(build, None if command is None else relative_paths(command, paths)):
            dst.write(text.encode("utf-8") + b"\n")
        if command is None:
            dst.write(relative_paths(first, paths))
        for line in _lines(src):
            dst.write(relative_paths(line, paths))
    return str(relative)


def _lines(src: BinaryIO) -> Iterator[bytes]:
    # Bounded reads: a log with no newline in megabytes is still read a piece at a time.
    while chunk := src.readline(1 << 16):
        yield chunk


def controller_paths(data_dir: Path) -> list[tuple[bytes, bytes]]:
    """The controller's own folders and what a log says instead, longest first."""
    pairs: dict[bytes, bytes] = {}
    for folder in {str(data_dir), os.path.abspath(data_dir), os.path.realpath(data_dir)}:
        pairs[folder.rstrip("/").encode()] = b"<data>"
    home = os.path.expanduser("~")
    if home not in ("/", "~", ""):
        pairs.setdefault(home.rstrip("/").encode(), b"~")
    return sorted(pairs.items(), key=lambda pair: len(pair[0]), reverse=True)


def relative_paths(line: bytes, paths: list[tuple[bytes, bytes]]) -> bytes:
    """``line`` with the build's folder as ``.`` and the controller's folders named, not shown."""
    line = BOX.sub(b".", line)
    for path, name in paths:
        if path in line:
            line = re.sub(re.escape(path) + rb"(?=[/\s'\"`:;,)\]]|$)", name, line)
    return line


def header(build: Build, command: bytes | None) -> list[str]:
    """The lines a stored log starts with: what was built, where, when, how it ended, how long
    it took, then the command, wrapped."""
    version = build.version
    result = build.status.value
    if build.status is BuildStatus.FAILED and build.failure_reason:
        result += f": {build.failure_reason}" + (f" ({build.failure_detail})" if build.failure_detail else "")
    lines = [
        f"{version.project.name} {version.version}  ({build.abi.tag})",
        f"builder   {build.builder.name if build.builder else '-'}",
        f"started   {build.started_at:%Y-%m-%d %H:%M:%S} UTC",
        f"result    {result}",
        f"duration  {build.duration or 0:.1f} s",
        f"build     #{build.id}",
    ]
    if command is not None:
        text = command.decode("utf-8", "replace")
        wrapped = textwrap.wrap(text, COMMAND_WIDTH - 4, break_long_words=False, break_on_hyphens=False)
        ends = [" \\"] * (len(wrapped) - 1) + [""]
        lines += ["command:"] + [f"  {part}{end}" for part, end in zip(wrapped, ends, strict=True)]
    return [*lines, "-" * COMMAND_WIDTH]
