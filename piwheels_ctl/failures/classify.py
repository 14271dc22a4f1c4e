"""Why a build failed, read from its log: a reason from a fixed list and, where it has one, a name."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from .rules import RULES

REASONS = (
    "missing-header",  # detail: the header, as the #include names it
    "missing-library",  # detail: the library of "-lfoo" (foo)
    "missing-pkg-config",  # detail: the pkg-config module
    "missing-program",  # detail: the program (curl-config, pg_config, swig, cmake, ...)
    "needs-rust",  # no Rust at all (or only what the project tried to download)
    "rust-too-old",  # detail: the rustc asked for and the one found, or the Cargo feature
    "needs-fortran",
    "needs-cuda",
    "needs-network",  # it tried to reach a host: named by the log or the sandbox's refusals
    "python2-only",
    "setuptools-too-new",  # use_2to3, Feature, removed modules: detail the one it wanted
    "cython3-incompatible",
    "build-backend-too-new",  # detail: the backend and the setting it no longer takes
    "needs-board",  # detail: the board(s) its setup.py looked for and did not find
    "missing-dev-package",  # detail: the library whose development files the log asks for
    "build-dependency-unresolved",  # detail: the requirement pip could not satisfy
    "unsupported-python",  # detail: the Requires-Python that excludes the interpreter
    "timeout",
    "out-of-memory",
    "too-many-processes",
    "download-failed",  # the sdist is not the file the index describes (its sha256 differs)
    "invalid-wheel",  # the build "succeeded" but its wheel is not what was asked for
    "import-failed",  # a compiled module of the wheel does not load: detail the symbol or library
    "builder-fault",  # the builder let this job down too many times in a row (not the project)
    "other",
)
INVALID_WHEEL = "invalid-wheel"
IMPORT_FAILED = "import-failed"
# How the agent writes a load check's failure into the build's log (``agent/loadcheck.py``).
IMPORT_FAILED_LINE = "[piwheels] import-failed: "
BUILDER_FAULT = "builder-fault"

# How far from the end the cause of a failure is looked for first: pip prints the failing
# step's output last, while the start of a log can hold the noise of configure-style probes
# ("fatal error: foo.h" from a check that was allowed to fail).
TAIL_LINES = 400
# The evidence is kept to this many characters: a window around the matched text.
EVIDENCE_MAX = 500
# A project that downloads its own toolchain when it finds none: whatever stops the download,
# what it lacks is the toolchain (reason, detail); the download's failure is the evidence.
TOOLCHAIN_DOWNLOADS = (
    (re.compile(r"Rust not found, installing into a temporary directory"), "needs-rust", "cargo"),
    (re.compile(r"^info: downloading installer$", re.MULTILINE), "needs-rust", "cargo"),  # rustup-init
)


@dataclass(frozen=True)
class Failure:
    """A failed build's reason (one of ``REASONS``), its detail (such as the missing header) and
    the evidence: the log line the reason was read from, or what the agent found."""

    reason: str
    detail: str | None
    evidence: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class _CompiledRule:
    reason: str
    pattern: re.Pattern[str]
    detail: str | None


_RULES = tuple(_CompiledRule(r.reason, re.compile(r.pattern, re.MULTILINE), r.detail) for r in RULES)


_DOWNLOAD = re.compile(r"^.*\bDownloading \S+ from \S+.*$", re.MULTILINE)


def evidence_window(text: str, start: int, end: int, size: int = EVIDENCE_MAX) -> str:
    """The line(s) holding ``text[start:end]``, cut to about ``size`` characters around it (an
    ellipsis marks a cut): a make line of thousands of characters keeps the error it holds."""
    first = text.rfind("\n", 0, start) + 1
    last = text.find("\n", max(end - 1, start))
    last = len(text) if last < 0 else last
    line = text[first:last]
    start, end = start - first, end - first
    lead = len(line) - len(line.lstrip())
    line = line.strip()
    start, end = max(start - lead, 0), max(end - lead, 0)
    # A match over several lines: its last line is the error (Python 2's "except X, e:" then
    # SyntaxError), so the window ends there.
    if len(line) <= size:
        return line
    end = min(max(end, start + 1), len(line))
    if end - start >= size:
        start = end - size
    else:
        room = size - (end - start)
        start = max(0, start - room // 2)
        end = min(len(line), start + size)
        start = max(0, end - size)
    return ("…" if start > 0 else "") + line[start:end] + ("…" if end < len(line) else "")


def _earliest(text: str) -> Failure | None:
    """The failure whose match starts first in ``text``; at the same place, the earlier rule."""
    found: tuple[int, Failure] | None = None
    for rule in _RULES:
        match = rule.pattern.search(text)
        if match is not None and (found is None or match.start() < found[0]):
            groups = match.groupdict()
            detail = groups.get("detail") or rule.detail
            if detail and "{" in detail:
                detail = detail.format(**groups)
            # The evidence is the line the match ends on: for a rule that spans lines (Python 2's
            # "except X, e:" then SyntaxError) that is the error itself.
            begin = text.rfind("\n", 0, match.end() - 1) + 1
            evidence = evidence_window(text, max(match.start(), begin), match.end())
            found = (match.start(), Failure(rule.reason, detail, evidence))
    return found[1] if found is not None else None


def classify(
    log: str,
    *,
    timed_out: bool = False,
    limit: str | None = None,
    network: Sequence[str] = (),
    download: str | None = None,
    load_check: Sequence[str] = (),
) -> Failure:
    """The reason a build failed: the agent's own findings if any, else the first known error
    near the log's end.

    ``limit`` is the limit the agent ended the build at ("memory", "processes"); ``network``
    the connections its sandbox refused, the first of which is the detail; ``download`` why the
    agent's check of the sdist failed; ``load_check`` the loader's messages for the wheel's
    compiled modules that did not load (the first is the evidence, its symbol or library the
    detail).
    """
    if download:
        return Failure("download-failed", download, f"the agent's check of the sdist: {download}")
    if load_check:
        hit = _earliest(IMPORT_FAILED_LINE + load_check[0])
        detail = hit.detail if hit is not None and hit.reason == IMPORT_FAILED else None
        return Failure(IMPORT_FAILED, detail, load_check[0][:EVIDENCE_MAX])
    if timed_out:
        return Failure("timeout", None, "the agent ended the build at its time limit")
    if limit == "memory":
        return Failure("out-of-memory", "the whole build's memory limit", "the agent: memory limit reached")
    if limit == "processes":
        return Failure("too-many-processes", None, "the agent: process limit reached")
    lines = log.splitlines(keepends=True)
    tail = "".join(lines[-TAIL_LINES:])
    failure = _earliest(tail)
    if failure is None and len(lines) > TAIL_LINES:
        failure = _earliest(log)
    for marker, reason, detail in TOOLCHAIN_DOWNLOADS:
        seen = marker.search(log)
        if seen is not None and (failure is None or failure.reason in ("needs-network", "other")):
            found = [failure.evidence] if failure is not None and failure.evidence else []
            if network:
                found.append(f"the sandbox refused {network[0]}")
            fetched = _DOWNLOAD.search(log, seen.end())
            if fetched is not None:
                found.insert(0, fetched[0].strip())
            return Failure(reason, detail, evidence_window("; ".join(found) or marker.pattern, 0, 1))
    if network and (failure is None or (failure.reason == "needs-network" and failure.detail is None)):
        evidence = failure.evidence if failure is not None else f"the sandbox refused {network[0]}"
        failure = Failure("needs-network", network[0], evidence)
    return failure if failure is not None else Failure("other", None)
