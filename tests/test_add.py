"""``add``: what pip would install for the farm's Pythons, from arguments and requirements files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from helpers import clean_env, piwheels
from indexserver import IndexServer

# The Python of the local builder: the ABI the farm builds for in these tests.
PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"


def _queued(env: dict[str, str]) -> list[tuple[str, str]]:
    return sorted((j["name"], j["version"]) for j in json.loads(piwheels(env, "queue", "--json").stdout))


def test_add_from_a_requirements_file_asks_for_what_pip_would_install(tmp_path: Path) -> None:
    folder = tmp_path / "upstream"
    folder.mkdir()
    for name in ("demo-1.0", "demo-1.5", "demo-2.0", "other-3.0", "pinned-0.9", "pinned-1.0", "nested-4.0"):
        (folder / f"{name}.tar.gz").write_bytes(b"sdist")
    env = clean_env(PIWHEELS_DATA_DIR=str(tmp_path / "data"), PIWHEELS_UPSTREAM=str(folder))
    piwheels(env, "init")
    (tmp_path / "more.txt").write_text("nested\n")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(
        "# our app\n"
        "--index-url https://example.org/simple/\n"
        "--extra-index-url https://example.net/simple\n"
        "-e .\n"
        "demo<2  # not 2.0 yet\n"
        "other \\\n"
        "    --hash=sha256:0123456789abcdef\n"
        "./vendored/thing\n"
        "thing @ https://example.org/thing-1.0.tar.gz\n"
        "demo>>=1\n"
        "\n"
        "pinned==0.9\n"
        "windows-only; sys_platform == 'win32'\n"
        "-r more.txt\n"
        "pinned=0.9\n"
    )
    proc = piwheels(env, "add", "-r", str(requirements), check=False)
    assert proc.returncode == 2, proc.stderr
    # Every bad line is named, each skipped line gets one warning, and the good lines are added.
    for line in (2, 3):
        assert f"{requirements}:{line}: pip option" in proc.stderr, proc.stderr
    assert f"{requirements}:8: './vendored/thing' skipped" in proc.stderr, proc.stderr
    assert f"{requirements}:9: 'thing' skipped" in proc.stderr, proc.stderr
    assert f"{requirements}:10: 'demo>>=1' is not a valid requirement" in proc.stderr, proc.stderr
    assert f"{requirements}:15: 'pinned=0.9' is not a valid requirement" in proc.stderr, proc.stderr
    assert "2 line(s) are not requirements" in proc.stderr, proc.stderr
    assert "windows-only left out" in proc.stderr, proc.stderr
    assert "demo: 1.5" in proc.stdout and "other: 3.0" in proc.stdout and "pinned: 0.9" in proc.stdout
    assert _queued(env) == [("demo", "1.5"), ("nested", "4.0"), ("other", "3.0"), ("pinned", "0.9")]


def test_add_picks_the_newest_version_the_farms_python_installs(tmp_path: Path) -> None:
    folder = tmp_path / "index"
    folder.mkdir()
    for version in ("1.0", "1.5", "2.0", "3.0"):
        (folder / f"wide-{version}.tar.gz").write_bytes(b"sdist")
    (folder / "narrow-9.0.tar.gz").write_bytes(b"sdist")
    with IndexServer(folder) as index:
        index.requires_python["wide-3.0.tar.gz"] = ">=3.99"  # a Python no farm has
        index.requires_python["narrow-9.0.tar.gz"] = ">=3.99"
        index.yanked["wide-2.0.tar.gz"] = "broken"
        env = clean_env(PIWHEELS_DATA_DIR=str(tmp_path / "data"), PIWHEELS_UPSTREAM=index.url)
        piwheels(env, "init")
        added = piwheels(env, "add", "wide>=1.0")
        # pip on this Python installs 1.5: 3.0 wants a newer Python, 2.0 is yanked.
        assert "wide: 1.5" in added.stdout, added.stdout + added.stderr
        refused = piwheels(env, "add", "narrow>=1", check=False)
        assert refused.returncode == 2, refused.stdout
        assert f"narrow 9.0 requires Python >=3.99: no Python of this farm ({PYTHON}) can build it" in (
            refused.stderr
        ), refused.stderr
        pinned = piwheels(env, "add", "wide==3.0")
        assert "wide: 3.0" in pinned.stdout, pinned.stdout
        assert "wide 3.0 requires Python >=3.99: no Python of this farm" in pinned.stderr, pinned.stderr
    assert ("wide", "1.5") in _queued(env)
