"""``audit`` finds every disagreement between database, disk and index; ``--fix`` mends them."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import clean_env, piwheels
from wheels import make_wheel


def _farm(tmp_path: Path) -> tuple[dict[str, str], Path]:
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    env = clean_env(PIWHEELS_DATA_DIR=str(tmp_path / "data"), PIWHEELS_UPSTREAM=str(upstream))
    piwheels(env, "init")
    dist = tmp_path / "dist"
    dist.mkdir()
    piwheels(env, "import", str(make_wheel(dist, "one", "1.0")), str(make_wheel(dist, "two", "1.0")))
    piwheels(env, "publish")
    return env, tmp_path / "data" / "www" / "simple"


def test_a_consistent_farm_has_no_disagreement(tmp_path: Path) -> None:
    env, _simple = _farm(tmp_path)
    assert "no disagreement" in piwheels(env, "audit", "--deep").stdout


def test_audit_reports_each_kind_and_fix_repairs_them(tmp_path: Path) -> None:
    env, simple = _farm(tmp_path)
    (simple / "one" / "one-1.0-py3-none-any.whl").unlink()  # a row without its wheel
    orphan = simple / "two" / "two-9.0-py3-none-any.whl"
    orphan.write_bytes(b"not recorded")  # a wheel without its row
    (simple / "two" / ".two-1.0-py3-none-any.whl.old").write_bytes(b"x")  # an interrupted write
    page = simple / "two" / "index.json"
    data = json.loads(page.read_text())
    data["files"] = []
    page.write_text(json.dumps(data))  # a page that lost its file
    proc = piwheels(env, "audit", check=False)
    assert proc.returncode == 1
    for kind in ("row-without-file", "file-without-row", "stray-temp-file", "index-stale"):
        assert kind in proc.stdout, kind
    fixed = piwheels(env, "audit", "--fix")
    assert "no disagreement left" in fixed.stdout
    assert not orphan.exists()
    assert (tmp_path / "data" / "quarantine" / "two" / orphan.name).exists()
    assert "no disagreement" in piwheels(env, "audit").stdout
    assert [f["filename"] for f in json.loads(page.read_text())["files"]] == ["two-1.0-py3-none-any.whl"]


def test_the_cli_works_the_same_on_both_databases(tmp_path: Path, database_url: str) -> None:
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    env = clean_env(
        PIWHEELS_DATA_DIR=str(tmp_path / "data"),
        PIWHEELS_UPSTREAM=str(upstream),
        PIWHEELS_DATABASE_URL=database_url,
    )
    assert "database created" in piwheels(env, "init").stdout
    assert "up to date" in piwheels(env, "init").stdout
    dist = tmp_path / "dist"
    dist.mkdir()
    piwheels(env, "import", str(make_wheel(dist, "one", "1.0")), str(make_wheel(dist, "one", "2.0")))
    assert "published 1 project page(s)" in piwheels(env, "publish").stdout
    assert "no disagreement" in piwheels(env, "audit", "--deep").stdout
    status = json.loads(piwheels(env, "status", "--json").stdout)
    assert (status["projects"], status["versions"], status["files"]) == (1, 2, 2)
    page = json.loads((tmp_path / "data" / "www" / "simple" / "one" / "index.json").read_text())
    assert page["versions"] == ["1.0", "2.0"]
