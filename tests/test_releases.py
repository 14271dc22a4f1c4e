"""The builder role's release settings, jessie to trixie: every package it installs exists in
that release, and the agent runs on the oldest Python each release ships, where this machine
can run it.

No mirror here serves jessie, stretch or buster, so those releases cannot be converged: their
package names are checked against small lists kept in ``tests/release-packages`` (one per
release). Those of bullseye and bookworm are checked again against real Packages indexes: the
cached bullseye root's apt lists and this machine's own.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from piwheels_ctl.agent import agent

from debian_roots import CACHE, run_in_root

ROOT = Path(__file__).resolve().parent.parent
LISTS = Path(__file__).parent / "release-packages"
RELEASES = ["jessie", "stretch", "buster", "bullseye", "bookworm", "trixie"]
# What the role installs on every release, beside the release's own settings.
ALWAYS = ["build-essential", "ccache", "rsync"]
AGENT_DIR = Path(agent.__file__).parent


def _settings(release: str) -> dict[str, object]:
    loaded: dict[str, object] = yaml.safe_load(
        (ROOT / "roles/builder/vars" / f"Debian-{release}.yml").read_text()
    )
    return loaded


def _role_packages(release: str) -> set[str]:
    """Every package the builder role installs on ``release`` with its default settings."""
    settings = _settings(release)
    defaults = yaml.safe_load((ROOT / "roles/builder/defaults/main.yml").read_text())
    names = set(ALWAYS) | set(defaults["builder_build_deps"])
    names |= set(settings["__builder_python_packages"]) | set(settings["__builder_sandbox_packages"])  # type: ignore[call-overload]
    if settings.get("__builder_sudo_agent"):
        names.add("sudo")
    return names


def _listed(release: str) -> set[str]:
    lines = (LISTS / f"{release}.txt").read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def test_every_release_from_jessie_to_trixie_has_settings() -> None:
    found = sorted(p.stem.removeprefix("Debian-") for p in (ROOT / "roles/builder/vars").glob("Debian-*.yml"))
    assert sorted(RELEASES) == found


@pytest.mark.parametrize("release", RELEASES)
def test_each_package_the_role_installs_exists_in_the_release(release: str) -> None:
    missing = sorted(_role_packages(release) - _listed(release))
    assert missing == [], f"{release} has no package named {missing} (tests/release-packages/{release}.txt)"


@pytest.mark.parametrize(
    ("release", "pythons"),
    [
        ("jessie", ["2.7", "3.4"]),
        ("stretch", ["2.7", "3.5"]),
        ("buster", ["2.7", "3.7"]),
        ("bullseye", ["2.7", "3.9"]),
        ("bookworm", ["3.11"]),
        ("trixie", ["3.13"]),
    ],
)
def test_each_release_builds_with_every_python_it_ships(release: str, pythons: list[str]) -> None:
    settings = _settings(release)
    assert settings["__builder_pythons"] == [f"/usr/bin/python{p}" for p in pythons]
    packages = set(settings["__builder_python_packages"])  # type: ignore[call-overload]
    assert {f"python{p}-dev" for p in pythons} <= packages, (
        "a Python without its headers builds no C extension"
    )


def test_a_release_without_bubblewrap_builds_through_the_sudo_rule() -> None:
    for release in RELEASES:
        settings = _settings(release)
        assert bool(settings["__builder_sandbox_packages"]) != bool(settings.get("__builder_sudo_agent")), (
            release
        )


def test_the_bullseye_list_is_in_bullseyes_real_packages_index() -> None:
    lists = [CACHE / "bullseye-armhf" / "var/lib/apt/lists", CACHE / "bullseye-amd64" / "var/lib/apt/lists"]
    indexes = [p for folder in lists if folder.is_dir() for p in folder.glob("*_Packages")]
    if not indexes:
        pytest.skip("no bullseye root cached yet (made by test_agent_py27.py or test_arm.py)")
    names = {
        line.split(":", 1)[1].strip()
        for index in indexes
        for line in index.read_text(errors="replace").splitlines()
        if line.startswith("Package: ")
    }
    assert sorted(_listed("bullseye") - names) == []


def test_the_bookworm_list_is_in_this_machines_packages_index() -> None:
    if "bookworm" not in Path("/etc/os-release").read_text():
        pytest.skip("this machine is not bookworm: its apt lists are another release's")
    shown = subprocess.run(
        ["apt-cache", "show", "--no-all-versions", *sorted(_listed("bookworm"))],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    found = {
        line.split(":", 1)[1].strip() for line in shown.stdout.splitlines() if line.startswith("Package: ")
    }
    assert sorted(_listed("bookworm") - found) == [], shown.stderr


# The oldest Python each release ships, and where this machine has it: 2.7 in the cached
# bullseye root (the same 2.7.x line as jessie's, stretch's and buster's), 3.11 here (bookworm).
OLDEST = {
    "jessie": "2.7",
    "stretch": "2.7",
    "buster": "2.7",
    "bullseye": "2.7",
    "bookworm": "3.11",
    "trixie": "3.13",
}


@pytest.mark.parametrize("release", RELEASES)
def test_the_agent_runs_on_the_oldest_python_of_the_release(release: str, tmp_path: Path) -> None:
    version = OLDEST[release]
    python = f"/usr/bin/python{version}"
    if Path(python).exists():
        for name in agent.MODULES:
            shutil.copy(AGENT_DIR / name, tmp_path / name)
        done = subprocess.run(
            [python, str(tmp_path / "agent.py"), "probe"], capture_output=True, text=True, timeout=120
        )
    elif (CACHE / "bullseye-amd64" / python.lstrip("/")).exists():
        root = CACHE / "bullseye-amd64"
        place = Path(shutil.copytree(AGENT_DIR, root / "tmp" / f"agent-{release}", dirs_exist_ok=True))
        try:
            done = run_in_root(root, [python, f"/tmp/{place.name}/agent.py", "probe"])
        finally:
            shutil.rmtree(place, ignore_errors=True)
    else:
        pytest.skip(f"Python {version} ({release}'s oldest) is not on this machine nor in a cached root")
    assert done.returncode == 0, done.stderr[-2000:]
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["python_tag"] == "cp" + version.replace(".", ""), probe
