"""``audit`` finds every disagreement between database, disk and index; ``--fix`` mends them."""

from __future__ import annotations

import hashlib
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
    env["COLUMNS"] = "1000"  # one line per disagreement, however long its paths and hashes
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


def test_deep_audit_finds_a_published_wheel_overwritten_with_other_bytes(tmp_path: Path) -> None:
    """The attack: something (a build) rewrote another project's published wheel, same size."""
    env, simple = _farm(tmp_path)
    wheel = simple / "two" / "two-1.0-py3-none-any.whl"
    original = wheel.read_bytes()
    forged = bytes(b ^ 0xFF for b in original)
    wheel.write_bytes(forged)
    assert len(forged) == len(original)
    deep = piwheels(env, "audit", "--deep", check=False)
    assert deep.returncode == 1, deep.stdout
    recorded = hashlib.sha256(original).hexdigest()
    lines = [line for line in deep.stdout.splitlines() if line.startswith("hash-mismatch")]
    assert len(lines) == 1 and str(wheel) in lines[0], deep.stdout
    assert hashlib.sha256(forged).hexdigest() in lines[0] and recorded in lines[0], lines[0]
    piwheels(env, "audit", "--deep", "--fix")
    assert not wheel.exists(), "the forged wheel is still served"
    assert (tmp_path / "data" / "quarantine" / "two" / wheel.name).read_bytes() == forged


def test_audit_compares_the_pages_hashes_with_the_database(tmp_path: Path) -> None:
    env, simple = _farm(tmp_path)
    page = simple / "one" / "index.json"
    data = json.loads(page.read_text())
    data["files"][0]["hashes"]["sha256"] = "0" * 64
    page.write_text(json.dumps(data))
    html = simple / "one" / "index.html"
    recorded = data["files"][0]["filename"]
    text = html.read_text()
    html.write_text(text.replace("#sha256=", "#sha256=1111", 1))
    proc = piwheels(env, "audit", check=False)
    mismatches = [line for line in proc.stdout.splitlines() if line.startswith("index-hash-mismatch")]
    assert len(mismatches) == 2, proc.stdout
    assert any("index.json" in m and recorded in m and "0" * 64 in m for m in mismatches), mismatches
    assert any("index.html" in m for m in mismatches), mismatches
    assert "no disagreement left" in piwheels(env, "audit", "--fix").stdout
    assert json.loads(page.read_text())["files"][0]["hashes"]["sha256"] != "0" * 64


def test_deep_audit_finds_a_metadata_file_with_other_bytes(tmp_path: Path) -> None:
    env, simple = _farm(tmp_path)
    metadata = simple / "one" / "one-1.0-py3-none-any.whl.metadata"
    metadata.write_bytes(b"Metadata-Version: 2.1\nName: evil\nVersion: 6.6\n")
    assert "no disagreement" in piwheels(env, "audit").stdout  # names and sizes alone cannot tell
    deep = piwheels(env, "audit", "--deep", check=False)
    assert "metadata-mismatch" in deep.stdout and str(metadata) in deep.stdout, deep.stdout
    assert "no disagreement left" in piwheels(env, "audit", "--deep", "--fix").stdout
    assert b"Name: one" in metadata.read_bytes()


def test_a_reimport_with_other_bytes_keeps_the_old_url(tmp_path: Path) -> None:
    env, simple = _farm(tmp_path)
    old = simple / "one" / "one-1.0-py3-none-any.whl"
    before = old.read_bytes()
    dist = tmp_path / "dist2"
    dist.mkdir()
    other = make_wheel(dist, "one", "1.0", extra={"one_data.txt": b"other bytes\n"})
    out = piwheels(env, "import", str(other)).stdout
    assert "as one-1.0-1-py3-none-any.whl" in out, out
    assert old.read_bytes() == before
    assert "no disagreement" in piwheels(env, "audit", "--deep").stdout


def test_every_kind_audit_reports_has_a_plan_and_a_fix() -> None:
    import ast
    import inspect

    from piwheels_ctl.builds import audit

    source = inspect.getsource(audit)
    kinds = {
        node.args[0].value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", None) == "Disagreement"
        and isinstance(node.args[0], ast.Constant)
    }
    assert kinds, "no Disagreement kinds found in builds/audit.py"
    assert kinds - set(audit.PLAN) == set(), f"kinds --fix cannot announce: {kinds - set(audit.PLAN)}"
    fixed = inspect.getsource(audit.fix)
    assert {k for k in kinds if f'"{k}"' not in fixed} == set(), "kinds fix() does not handle"
