"""What a wheel needs from apt: DT_NEEDED of its compiled modules, the Debian packages that
provide them here, recorded per file, and ``piwheels-ctl deps``."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from piwheels_ctl.agent import elfdeps

from helpers import clean_env, piwheels
from wheels import make_wheel

# A compiled module of Debian's own Python, which links libffi (Debian package libffi8 on bookworm).
CTYPES = Path("/usr/lib/python3.11/lib-dynload/_ctypes.cpython-311-x86_64-linux-gnu.so")


def _readelf_needed(path: Path) -> list[str]:
    out = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True, check=True).stdout
    return [line.split("[", 1)[1].split("]", 1)[0] for line in out.splitlines() if "(NEEDED)" in line]


@pytest.fixture
def ctypes_module() -> Path:
    if not CTYPES.exists():
        pytest.skip(f"{CTYPES} is not on this machine (not bookworm's Python 3.11)")
    return CTYPES


def test_needed_reads_what_readelf_reads(ctypes_module: Path) -> None:
    assert elfdeps.needed(ctypes_module.read_bytes()) == _readelf_needed(ctypes_module)
    assert elfdeps.needed(b"not an ELF file") is None


def test_a_wheels_libraries_and_their_debian_packages(tmp_path: Path, ctypes_module: Path) -> None:
    bundled = "demo.libs/libbundled-1234.so.1"
    wheel = make_wheel(
        tmp_path, "demo", "1.0", tag="cp311-cp311-linux_x86_64",
        extra={"demo/_ext.cpython-311-x86_64-linux-gnu.so": ctypes_module.read_bytes(),
               bundled: b"\x7fELF" + b"\0" * 60},
    )  # fmt: skip
    deps = {d["library"]: d["package"] for d in elfdeps.wheel_deps([str(wheel)])[str(wheel)]}
    assert deps["libffi.so.8"] == "libffi8", deps
    assert deps["libc.so.6"] == "libc6", deps


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A data dir with ``pick`` 1.0 imported (two wheels), and their deps as a builder reported them."""
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    env = clean_env(PIWHEELS_DATA_DIR=str(tmp_path / "data"), PIWHEELS_UPSTREAM=str(upstream))
    piwheels(env, "init")
    dist = tmp_path / "dist"
    dist.mkdir()
    wheels = [make_wheel(dist, "pick", "1.0", tag=f"cp311-cp311-linux_{p}") for p in ("armv7l", "armv6l")]
    piwheels(env, "import", *map(str, wheels))
    reported = [
        {"library": "libxml2.so.2", "path": "/usr/lib/x/libxml2.so.2", "package": "libxml2"},
        {"library": "libc.so.6", "path": "/lib/x/libc.so.6", "package": "libc6"},
        {"library": "libodd.so.1", "path": None, "package": None},
    ]
    db = sqlite3.connect(tmp_path / "data" / "piwheels.db")
    with db:
        db.execute("UPDATE files SET deps = ? WHERE filename LIKE '%armv7l%'", (json.dumps(reported),))
        db.execute("UPDATE files SET deps = ? WHERE filename LIKE '%armv6l%'", (json.dumps(reported[:1]),))
    db.close()
    return env


def test_deps_prints_the_apt_line_without_what_every_system_has(env: dict[str, str]) -> None:
    text = piwheels(env, "deps", "pick").stdout
    assert "sudo apt install libxml2\n" in text, text
    assert (
        "pick-1.0-cp311-cp311-linux_armv7l.whl: libxml2.so.2 (libxml2), libc.so.6 (libc6), libodd.so.1 (?)"
        in text
    )
    assert "no Debian package known for libodd.so.1" in text
    result = json.loads(piwheels(env, "deps", "pick==1.0", "--json").stdout)
    assert (result["name"], result["version"], result["apt"]) == ("pick", "1.0", "sudo apt install libxml2")
    assert result["packages"] == [{"package": "libxml2", "libraries": ["libxml2.so.2"]}]
    assert result["unknown_libraries"] == ["libodd.so.1"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [("nothing-here", "deps: no project 'nothing-here'"), ("pick==2.0", "deps: pick==2.0 has no wheels"),
     ("pick==not a version", "is not a version")],
)  # fmt: skip
def test_deps_names_what_is_wrong(env: dict[str, str], spec: str, message: str) -> None:
    proc = piwheels(env, "deps", spec, check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
