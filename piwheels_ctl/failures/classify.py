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
    "needs-rust",
    "needs-fortran",
    "needs-cuda",
    "needs-network",  # it tried to reach a host: named by the log or the sandbox's refusals
    "python2-only",
    "setuptools-too-new",  # use_2to3, Feature, removed modules: detail the one it wanted
    "cython3-incompatible",
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
# The evidence line is kept to this many characters.
EVIDENCE_MAX = 500


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


def _line_at(text: str, position: int) -> str:
    start = text.rfind("\n", 0, position) + 1
    end = text.find("\n", position)
    line = text[start : end if end >= 0 else len(text)].strip()
    return line[:EVIDENCE_MAX]


def _earliest(text: str) -> Failure | None:
    """The failure whose match starts first in ``text``; at the same place, the earlier rule."""
    found: tuple[int, Failure] | None = None
    for rule in _RULES:
        match = rule.pattern.search(text)
        if match is not None and (found is None or match.start() < found[0]):
            detail = match.groupdict().get("detail") or rule.detail
            # The evidence is the line the match ends on: for a rule that spans lines (Python 2's
            # "except X, e:" then SyntaxError) that is the error itself.
            found = (match.start(), Failure(rule.reason, detail, _line_at(text, match.end() - 1)))
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
        found = _earliest(IMPORT_FAILED_LINE + load_check[0])
        detail = found.detail if found is not None and found.reason == IMPORT_FAILED else None
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
    if network and (failure is None or (failure.reason == "needs-network" and failure.detail is None)):
        evidence = failure.evidence if failure is not None else f"the sandbox refused {network[0]}"
        failure = Failure("needs-network", network[0], evidence)
    return failure if failure is not None else Failure("other", None)
