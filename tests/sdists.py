"""The fixture projects of ``tests/packages``: turning them into sdists and building those with pip.

The sdist is written here, the way flit and hatchling write theirs, rather than by setuptools:
setuptools runs the project's ``setup.py`` to make an sdist, and ``py2-only``'s is not Python 3.
The archive follows the sdist specification (PEP 517/625/643 layout, pax tar, PKG-INFO) and is
byte-for-byte reproducible, so pip builds it exactly as it would an upload from the index.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

PACKAGES = Path(__file__).parent / "packages"

# 2020-01-01T00:00:00Z: any fixed time keeps the archives reproducible.
_MTIME = 1577836800
# Litter that running tools in a fixture folder leaves behind; never part of the sdist.
_LITTER = re.compile(r"^(__pycache__|build|dist|.*\.egg-info|\..*)$")


def fixture_projects() -> list[Path]:
    """The folders of ``tests/packages``, each one fixture project, sorted by name."""
    return sorted(p.parent for p in PACKAGES.glob("*/pyproject.toml"))


def project_name_version(project_dir: Path) -> tuple[str, str]:
    """The ``[project]`` name and version of the project in ``project_dir``."""
    with open(project_dir / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    return project["name"], project["version"]


def _files(project_dir: Path) -> list[Path]:
    found: list[Path] = []
    for path in sorted(project_dir.iterdir()):
        if _LITTER.match(path.name):
            continue
        found.extend(_files(path) if path.is_dir() else [path])
    return found


def _add(archive: tarfile.TarFile, arcname: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(arcname)
    info.size = len(data)
    info.mtime = _MTIME
    info.mode = mode
    archive.addfile(info, io.BytesIO(data))


def setuptools_project(
    root: Path,
    name: str,
    files: Mapping[str, str] | None = None,
    *,
    requires: Sequence[str] = (),
    tables: str = "",
) -> Path:
    """The folder ``root/name`` of a project ``name`` 1.0 built by setuptools, with ``files``.

    Its build requirements are setuptools and ``requires``; ``tables`` is TOML added to its
    pyproject.toml after the ``[project]`` table's name and version (more of that table first).
    """
    folder = root / name
    folder.mkdir(parents=True)
    build_requires = ", ".join(f'"{r}"' for r in ("setuptools>=61", *requires))
    (folder / "pyproject.toml").write_text(
        f'[build-system]\nrequires = [{build_requires}]\nbuild-backend = "setuptools.build_meta"\n\n'
        f'[project]\nname = "{name}"\nversion = "1.0"\n{tables}'
    )
    for path, text in (files or {}).items():
        (folder / path).write_text(text)
    return folder


def make_sdist(project_dir: Path, dest: Path) -> Path:
    """Write the sdist ``{normalized name}-{version}.tar.gz`` of ``project_dir`` into ``dest``."""
    name, version = project_name_version(project_dir)
    base = f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}"
    pkg_info = f"Metadata-Version: 2.2\nName: {name}\nVersion: {version}\n".encode()
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.PAX_FORMAT) as archive:
        _add(archive, f"{base}/PKG-INFO", pkg_info)
        for path in _files(project_dir):
            mode = 0o755 if path.stat().st_mode & 0o100 else 0o644
            _add(archive, f"{base}/{path.relative_to(project_dir).as_posix()}", path.read_bytes(), mode)
    dest.mkdir(parents=True, exist_ok=True)
    sdist = dest / f"{base}.tar.gz"
    # mtime=0 keeps the gzip header free of the time of writing.
    with open(sdist, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(tar_bytes.getvalue())
    return sdist


def pip_env(**settings: str) -> dict[str, str]:
    """This environment without pip settings (but its CA bundle), so pip uses only its command line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k == "PIP_CERT"}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", **settings)
    return env


def pip_wheel(
    python: str, sdist: Path, wheel_dir: Path, find_links: Path, *, home: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Build ``sdist`` with ``python``'s pip, isolated, build requirements only from ``find_links``."""
    command = [
        python, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "--no-index",
        "--find-links", str(find_links), "--wheel-dir", str(wheel_dir), str(sdist),
    ]  # fmt: skip
    return subprocess.run(
        command,
        env=pip_env(HOME=str(home)),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
