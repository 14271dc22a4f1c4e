"""A wheel's Requires-Python against the interpreter that built it, read as pip reads it.

pip refuses to build a project whose Requires-Python excludes its interpreter, uv does not: the
agent gives uv's builds pip's answer. Shipped to builders with the rest of this folder, so
stdlib-only and Python 2.7-compatible, hence no ``packaging``: release numbers are all
Requires-Python compares.
"""

from __future__ import absolute_import, division, print_function

import os
import re
import subprocess
import zipfile

try:
    from typing import List, Optional  # noqa: F401 - used in type comments
except ImportError:  # pragma: no cover - Python 2.7/3.4 builders without typing
    pass


# A METADATA larger than this is not read (the controller's checks refuse such a wheel).
MAX_METADATA = 1024 * 1024
METADATA = re.compile(r"^[^/]+\.dist-info/METADATA$")


def refusal(python, wheels):
    # type: (str, List[str]) -> Optional[str]
    """pip's words if one of the built ``wheels`` (paths of regular files the agent checked) has
    a Requires-Python that excludes ``python`` (pip refuses to build such a project, uv does
    not), else None. A wheel that cannot be read is left to the controller's checks."""
    try:
        out = subprocess.check_output(
            [python, "-E", "-s", "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"]
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    version = out.decode("ascii", "replace").strip()
    for path in wheels:
        try:
            with zipfile.ZipFile(path) as archive:
                infos = [i for i in archive.infolist() if METADATA.match(i.filename)]
                if not infos or infos[0].file_size > MAX_METADATA:
                    continue
                metadata = archive.read(infos[0]).decode("utf-8", "replace")
        except (zipfile.BadZipfile, zipfile.LargeZipFile, IOError, OSError, ValueError, EOFError,
                NotImplementedError, RuntimeError):  # fmt: skip
            continue
        match = re.search(r"^Requires-Python:[ \t]*(.+?)[ \t]*$", metadata.split("\n\n")[0], re.M)
        if match and not specifier_allows(match.group(1), version):
            name = os.path.basename(path).split("-")[0].replace("_", "-")
            return "Package %r requires a different Python: %s not in %r" % (name, version, match.group(1))
    return None


def _release(text):
    # type: (str) -> List[int]
    return [int(part) for part in re.findall(r"\d+", text.split("+")[0])[:4]]


def specifier_allows(specifier, version):
    # type: (str, str) -> bool
    """True if release ``version`` (such as 3.11.2) is in the PEP 440 ``specifier`` (such as
    ">=3.8, !=3.9.*"); comparisons of release numbers only, as Requires-Python needs."""
    have = _release(version)
    for clause in specifier.split(","):
        match = re.match(r"^\s*(~=|===|==|!=|<=|>=|<|>)\s*([0-9][0-9a-zA-Z.*+!]*)\s*$", clause)
        if not match:
            continue  # a clause we cannot read never refuses (pip decides on what it can read)
        op, wanted = match.groups()
        if wanted.endswith(".*"):
            prefix = _release(wanted[:-2])
            equal = have[: len(prefix)] + [0] * (len(prefix) - len(have)) == prefix
            if (op == "==") != equal:
                return False
            continue
        want = _release(wanted)
        size = max(len(want), len(have))
        a, b = have + [0] * (size - len(have)), want + [0] * (size - len(want))
        if op == "~=":
            ok = a >= b and a[: len(want) - 1] == want[: len(want) - 1]
        else:
            ok = {"==": a == b, "===": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b,
                  ">=": a >= b}[op]  # fmt: skip
        if not ok:
            return False
    return True
