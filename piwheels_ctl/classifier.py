"""Why a build failed, read from its log: a reason from a fixed list and, where it has one, a name."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

REASONS = (
    "missing-header",
    "missing-library",
    "needs-rust",
    "python2-only",
    "unsupported-python",
    "timeout",
    "out-of-memory",
    "too-many-processes",
    "needs-network",  # it tried to reach a host its sandbox does not let it reach
    "download-failed",  # the sdist is not the file the index describes (its sha256 differs)
    "invalid-wheel",  # the build "succeeded" but its wheel is not what was asked for
    "other",
)
INVALID_WHEEL = "invalid-wheel"

# How far from the end the cause of a failure is looked for first: pip prints the failing
# step's output last, while the start of a log can hold the noise of configure-style probes
# ("fatal error: foo.h" from a check that was allowed to fail).
TAIL_LINES = 400


@dataclass(frozen=True)
class Failure:
    """A failed build's reason (one of ``REASONS``) and its detail, such as the missing header."""

    reason: str
    detail: str | None


# Each rule is a reason and a pattern; a group named ``detail`` becomes the failure's detail.
# When patterns match at the same place, the earlier rule wins.
_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (reason, re.compile(pattern, re.MULTILINE))
    for reason, pattern in (
        # gcc: "foo.c:2:10: fatal error: foo.h: No such file or directory"; clang quotes the name.
        ("missing-header", r"fatal error: (?P<detail>[^\s:']+): No such file or directory"),
        ("missing-header", r"fatal error: '(?P<detail>[^']+)' file not found"),
        # GNU ld: "/usr/bin/ld: cannot find -lfoo" (binutils >= 2.39 appends ": No such file ...").
        ("missing-library", r"\bld(?:\.\w+)?: cannot find -l(?P<detail>[^\s:]+)"),
        ("missing-library", r"\bld: library not found for -l(?P<detail>[^\s:]+)"),
        ("missing-library", r"\bPackage (?P<detail>\S+) was not found in the pkg-config search path"),
        ("missing-library", r"\bNo package '(?P<detail>[^']+)' found"),
        # setuptools-rust, maturin and the cargo/rustc executables themselves.
        ("needs-rust", r"can't find Rust compiler"),
        ("needs-rust", r"Cargo, the Rust package manager, is not installed"),
        ("needs-rust", r"^[ \t]*error: `?cargo\b"),
        ("needs-rust", r"No such file or directory: '(?:cargo|rustc)'"),
        ("needs-rust", r"\b(?:cargo|rustc): (?:command )?not found"),
        ("needs-rust", r"No module named '(?:setuptools_rust|maturin)'"),
        ("needs-rust", r"maturin failed"),
        # Python 2 syntax in setup.py or in a module the build imports.
        ("python2-only", r"SyntaxError: Missing parentheses in call to '(?:print|exec)'"),
        ("python2-only", r"SyntaxError: multiple exception types must be parenthesized"),
        (
            "python2-only",
            r"^[ \t]*except[ \t]+[\w.]+[ \t]*,[ \t]*\w+[ \t]*:.*\n(?:.*\n){0,2}?[ \t]*SyntaxError",
        ),
        ("python2-only", r"SyntaxError: leading zeros in decimal integer literals"),
        (
            "python2-only",
            r"No module named '(?:urllib2|urlparse|httplib|ConfigParser|StringIO|cStringIO|cPickle"
            r"|HTMLParser|__builtin__|commands)'",
        ),
        # pip: "Package 'foo' requires a different Python: 3.11.7 not in '<3'" (with -v also
        # "Link requires a different Python (3.11.7 not in: '<3')") and, from the finder,
        # "Ignored the following versions ...: 1.0 Requires-Python >=3.12".
        ("unsupported-python", r"requires a different Python:? \(?\S+ not in:? '(?P<detail>[^']+)'"),
        ("unsupported-python", r"\bRequires-Python (?P<detail>[^\s;]+)"),
        # gcc's "Killed signal terminated program cc1plus" is the kernel's OOM killer at work.
        ("out-of-memory", r"Killed signal terminated program (?P<detail>\S+)"),
        ("out-of-memory", r"\bMemoryError\b"),
        ("out-of-memory", r"Cannot allocate memory"),
        ("out-of-memory", r"virtual memory exhausted"),
        ("out-of-memory", r"std::bad_alloc"),
    )
)


def _earliest(text: str) -> Failure | None:
    found: tuple[int, Failure] | None = None
    for reason, pattern in _RULES:
        match = pattern.search(text)
        if match is not None and (found is None or match.start() < found[0]):
            detail = match.groupdict().get("detail")
            found = (match.start(), Failure(reason, detail))
    return found[1] if found is not None else None


def classify(
    log: str,
    *,
    timed_out: bool = False,
    limit: str | None = None,
    network: Sequence[str] = (),
    download: str | None = None,
) -> Failure:
    """The reason a build failed: the agent's own findings if any, else the first known error
    near the log's end.

    ``limit`` is the limit the agent ended the build at ("memory", "processes"); ``network``
    the connections its sandbox refused, the first of which is the detail; ``download`` why the
    agent's check of the sdist failed.
    """
    if download:
        return Failure("download-failed", download)
    if timed_out:
        return Failure("timeout", None)
    if limit == "memory":
        return Failure("out-of-memory", "the whole build's memory limit")
    if limit == "processes":
        return Failure("too-many-processes", None)
    lines = log.splitlines(keepends=True)
    tail = "".join(lines[-TAIL_LINES:])
    failure = _earliest(tail)
    if failure is None and len(lines) > TAIL_LINES:
        failure = _earliest(log)
    if failure is None and network:
        failure = Failure("needs-network", network[0])
    return failure if failure is not None else Failure("other", None)
