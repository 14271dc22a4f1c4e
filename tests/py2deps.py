"""What a real build on Python 2.7 needs: the last setuptools, wheel and pip for 2.7, as wheels."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pypi_simple import PYPI_SIMPLE_ENDPOINT

from sdists import pip_env

# setuptools 44.1.1 and wheel 0.37.1 are the last for Python 2.7; pip 20.3.4 is its frontend
# (piwheels_ctl.farm.frontend.PINS).
PY27_WHEELS = ("setuptools==44.1.1", "wheel==0.37.1", "pip==20.3.4")


def download_py27_wheels(dest: Path) -> Path:
    """The Python 2.7 wheels of ``PY27_WHEELS`` in ``dest`` (a find-links folder), from PyPI."""
    dest.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "download", "--only-binary", ":all:", "--no-deps",
        "--python-version", "2.7", "--implementation", "py", "--dest", str(dest),
        "--index-url", PYPI_SIMPLE_ENDPOINT, *PY27_WHEELS,
    ]  # fmt: skip
    proc = subprocess.run(
        command, env=pip_env(), capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL
    )
    if proc.returncode != 0:
        raise RuntimeError(f"downloading {PY27_WHEELS} failed:\n{proc.stdout}{proc.stderr}")
    return dest
