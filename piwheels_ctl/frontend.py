"""The build frontend: the pip each builder Python builds with, pinned, never whatever is installed.

Every build runs ``python -m pip wheel --use-pep517`` with a pip of ours on ``PYTHONPATH``: the
newest pip that still supports that Python (pip 20.3.4 for 2.7, 19.1.1 for 3.4 …), fetched once
from the build index by the controller, checked by pip's own hash check, kept in the data
folder and sent to each builder. The builder's own pip, setuptools and wheel (old, missing, or
the controller's own virtualenv) never decide how a project is built: with ``--use-pep517``
every build is an isolated PEP 517 build whose build requirements come from the index.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from .config import Settings
from .errors import PiwheelsError

# (Python version, the newest pip for it); Pythons after the last row take NEWEST.
PINS: tuple[tuple[tuple[int, int], str], ...] = (
    ((2, 7), "20.3.4"),
    ((3, 4), "19.1.1"),
    ((3, 5), "20.3.4"),
    ((3, 6), "21.3.1"),
    ((3, 7), "24.0"),
    ((3, 8), "24.3.1"),
    ((3, 9), "26.0.1"),
)
NEWEST = "26.3"
_PYTHON_TAG = re.compile(r"^(?:cp|pp)(\d)(\d+)")
_lock = threading.Lock()


class FrontendError(PiwheelsError):
    """The pinned pip could not be fetched: the builder cannot build for that Python now."""


def python_version(abi_tag: str) -> tuple[int, int]:
    """The Python version of an ABI tag such as ``cp27-cp27mu-linux_armv7l`` or ``pp39-pypy39_pp73-…``."""
    match = _PYTHON_TAG.match(abi_tag)
    if match is None:
        raise FrontendError(f"{abi_tag}: not a CPython or PyPy ABI")
    return int(match.group(1)), int(match.group(2))


def pip_version(version: tuple[int, int]) -> str:
    """The pip that builds for Python ``version``."""
    return dict(PINS).get(version, NEWEST if version > PINS[-1][0] else PINS[0][1])


def wheel(settings: Settings, abi_tag: str, index_url: str | None, find_links: list[str]) -> Path:
    """The pinned pip's wheel for ``abi_tag``'s Python, fetched from the build index on first use."""
    python = python_version(abi_tag)
    version = pip_version(python)
    folder = settings.data_dir.resolve() / "frontends"
    with _lock:
        found = sorted(folder.glob(f"pip-{version}-*.whl"))
        if found:
            return found[0]
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder, prefix=".fetch-") as scratch:
            command = [
                sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
                "--python-version", f"{python[0]}.{python[1]}", "--dest", scratch, f"pip=={version}",
            ]  # fmt: skip
            command += ["--index-url", index_url] if index_url else ["--no-index"]
            for link in find_links:
                command += ["--find-links", link]
            # A HOME of its own: pip's user agent runs `rustc --version`, and rustup then writes
            # into HOME; the operator's settings and home stay out of it.
            env = {**os.environ, "HOME": scratch, "PIP_CONFIG_FILE": os.devnull,
                   "PIP_DISABLE_PIP_VERSION_CHECK": "1"}  # fmt: skip
            done = subprocess.run(
                command, capture_output=True, text=True, env=env, timeout=600, stdin=subprocess.DEVNULL
            )
            fetched = sorted(Path(scratch).glob(f"pip-{version}-*.whl"))
            if done.returncode != 0 or not fetched:
                why = done.stderr.strip()[-300:]
                raise FrontendError(f"pip {version} (the frontend for {abi_tag}) could not be fetched: {why}")
            target = folder / fetched[0].name
            os.replace(fetched[0], target)
        return target
