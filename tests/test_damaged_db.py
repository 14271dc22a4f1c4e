"""A damaged database stops destructive repairs (issue 23, attack 2): `audit`, `audit --fix`,
`init`, `run` and `publish` check the database first and refuse with the way to restore it;
`audit --fix` says what it will do, asks in a terminal, and takes away no more than a bounded
share of the published wheels without `--force`."""

from __future__ import annotations

import json
import os
import select
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from piwheels_ctl.db import engine as db_engine
from piwheels_ctl.db.engine import make_engine

from helpers import PIWHEELS, clean_env, piwheels, tree_snapshot
from wheels import make_wheel

NAMES = ("one", "two", "three")


def _farm(tmp_path: Path, versions: int = 2, database_url: str | None = None) -> tuple[dict[str, str], Path]:
    """A farm with ``versions`` wheels of each of NAMES, imported and published; its env and data dir."""
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    data = tmp_path / "data"
    env = clean_env(
        PIWHEELS_DATA_DIR=str(data),
        PIWHEELS_UPSTREAM=str(upstream),
        PIWHEELS_DEBIAN_MIRROR="",
        COLUMNS="1000",  # one line per message, however long its paths
    )
    if database_url is not None:
        env["PIWHEELS_DATABASE_URL"] = database_url
    piwheels(env, "init")
    dist = tmp_path / "dist"
    dist.mkdir()
    wheels = [make_wheel(dist, name, f"{v}.0") for name in NAMES for v in range(1, versions + 1)]
    piwheels(env, "import", *map(str, wheels))
    piwheels(env, "publish")
    return env, data


def _damage_versions_root(database: Path, where: str) -> None:
    """Overwrite 3000 bytes of the root page of the ``versions`` table with zeros: its ``cells``
    (the page's end: its header survives, and SQLite reads garbage without a word) or its
    ``header`` (its start: SQLite refuses the page)."""
    conn = sqlite3.connect(database)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the file itself
        (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'versions'").fetchone()
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    finally:
        conn.close()
    offset = (root - 1) * page_size + (page_size - 3000 if where == "cells" else 0)
    with database.open("r+b") as f:
        f.seek(offset)
        f.write(b"\0" * 3000)


def _listed(www: Path) -> dict[str, list[str]]:
    """The files each project's JSON page lists."""
    return {
        name: sorted(
            f["filename"] for f in json.loads((www / "simple" / name / "index.json").read_text())["files"]
        )
        for name in NAMES
    }


@pytest.mark.parametrize("where", ["cells", "header"])
def test_a_damaged_database_stops_audit_fix_run_and_publish(tmp_path: Path, where: str) -> None:
    """The attack: one overwritten page of `versions`, then `audit --fix` (which had moved every
    published wheel to quarantine, calling them "on disk but not recorded"), `run`, `publish`."""
    env, data = _farm(tmp_path)
    www = data / "www"
    listed = _listed(www)
    assert sum(map(len, listed.values())) == 2 * len(NAMES), listed
    before = tree_snapshot(www)
    database = data / "piwheels.db"
    _damage_versions_root(database, where)
    for args in (["audit", "--fix"], ["audit"], ["run"], ["publish"], ["publish", "--full"], ["init"]):
        proc = piwheels(env, *args, check=False)
        command, said = f"piwheels-ctl {' '.join(args)}", proc.stderr.strip()
        moved = sorted(str(p.relative_to(data)) for p in (data / "quarantine").rglob("*.whl"))
        assert moved == [], f"{command} moved published wheels away: {moved}\n{proc.stdout}{said}"
        assert tree_snapshot(www) == before, f"{command} changed the published index:\n{proc.stdout}{said}"
        assert proc.returncode == 1, f"{command} exited {proc.returncode}: {proc.stdout}{said}"
        assert "Traceback" not in said and len(said.splitlines()) == 1, said
        for text in (str(database), "damaged", "docs/farm.md, 'Backups'", ".backup", "audit --fix"):
            assert text in said, f"{command}: {text!r} not in {said!r}"
        assert "fixed:" not in proc.stdout, proc.stdout
    assert _listed(www) == listed


def test_the_bounded_start_check_finds_the_damaged_root_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a file too large for quick_check at every start, the edges of each table give the damage away."""
    from piwheels_ctl.db.engine import check_integrity  # here: the other tests run on code without it
    from piwheels_ctl.errors import DatabaseDamagedError

    _env, data = _farm(tmp_path)
    database = data / "piwheels.db"
    monkeypatch.setattr(db_engine, "START_CHECK_FULL_MB", 0)  # this farm as large as 500,000 projects
    engine = make_engine(f"sqlite:///{database}")
    try:
        assert "first and last" in check_integrity(engine, full=False)
        _damage_versions_root(database, "cells")
        engine.dispose()
        with pytest.raises(DatabaseDamagedError, match=r"versions: rowids out of order.*docs/farm\.md"):
            check_integrity(engine, full=False)
        with pytest.raises(DatabaseDamagedError, match=r"PRAGMA quick_check: .*out of order"):
            check_integrity(engine, full=True)
    finally:
        engine.dispose()


def _strays(folder: Path, count: int) -> list[Path]:
    """``count`` wheels on disk that no row records (a damaged database would show every wheel so)."""
    dist = folder.parent.parent.parent / "strays"
    dist.mkdir(exist_ok=True)
    made = []
    for i in range(count):
        wheel = make_wheel(dist, folder.name, f"9.{i}")
        made.append(Path(shutil.copy2(wheel, folder / wheel.name)))
    return made


def test_fix_takes_away_no_more_than_a_bounded_share_without_force(tmp_path: Path) -> None:
    env, data = _farm(tmp_path, versions=4)  # 12 wheels recorded
    simple = data / "www" / "simple"
    strays = _strays(simple / "one", 20)  # 20 of 32 on disk unrecorded: more than 10, more than 10 %
    proc = piwheels(env, "audit", "--fix", check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    for text in ("nothing changed", "20 of the 32", "audit_fix_max_share", "--force"):
        assert text in proc.stderr, f"{text!r} not in {proc.stderr!r}"
    assert "to fix: move one-9.0-py3-none-any.whl to quarantine" in proc.stdout, proc.stdout
    assert all(p.exists() for p in strays) and not (data / "quarantine").exists(), "moved without --force"
    # The setting moves the bound.
    wider = {**env, "PIWHEELS_AUDIT_FIX_MAX_SHARE": "0.7"}  # 22 of 32
    assert "no disagreement left" in piwheels(wider, "audit", "--fix").stdout
    assert not any(p.exists() for p in strays)
    assert len(list((data / "quarantine" / "one").iterdir())) == 20


def test_fix_forgets_no_more_than_a_bounded_share_when_the_disk_is_missing(tmp_path: Path) -> None:
    """The data disk not mounted: every row "recorded but not on disk"; forgetting them all would
    queue the whole farm again."""
    env, data = _farm(tmp_path, versions=4)
    simple = data / "www" / "simple"
    simple.rename(data / "www" / "elsewhere")
    proc = piwheels(env, "audit", "--fix", check=False)
    assert proc.returncode == 1 and "12 of the 12" in proc.stderr, proc.stdout + proc.stderr
    status = json.loads(piwheels(env, "status", "--json").stdout)
    assert status["files"] == 12, f"rows forgotten: {status}"
    # --force lifts the bound: the operator has looked, and the rows go (to be built again).
    forced = piwheels(env, "audit", "--fix", "--force", check=False)
    assert forced.stdout.count("fixed: forgot") == 12, forced.stdout + forced.stderr
    assert json.loads(piwheels(env, "status", "--json").stdout)["files"] == 0


def _in_terminal(env: dict[str, str], args: list[str], answer: bytes) -> tuple[int, str]:
    """Run piwheels-ctl with a terminal as stdin, stdout and stderr; answer its question with
    ``answer``. Its exit code and all it wrote."""
    import pty

    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [str(PIWHEELS), *args],
        env={**env, "TERM": "dumb", "NO_COLOR": "1"},
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    written = b""
    answered = False
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the child closed the terminal: all is read
                break
            if not chunk:
                break
            written += chunk
            if not answered and b"Fix them?" in written:
                os.write(controller, answer + b"\n")
                answered = True
        code = proc.wait(timeout=60)
    finally:
        os.close(controller)
        if proc.poll() is None:
            proc.kill()
    return code, written.decode(errors="replace")


def test_fix_says_what_it_will_do_and_asks_in_a_terminal(tmp_path: Path) -> None:
    env, data = _farm(tmp_path)
    (stray,) = _strays(data / "www" / "simple" / "two", 1)
    dry = piwheels(env, "audit", "--fix", "--dry-run", check=False)
    assert dry.returncode == 1 and "--dry-run" in dry.stderr, dry.stdout + dry.stderr
    assert f"to fix: move {stray.name} to quarantine" in dry.stdout, dry.stdout
    assert stray.exists(), "--dry-run moved it"
    code, said = _in_terminal(env, ["audit", "--fix"], b"n")
    assert "Fix them?" in said, f"no question asked in a terminal:\n{said}"
    assert said.index(f"to fix: move {stray.name}") < said.index("Fix them?"), said
    assert code == 1 and "nothing changed" in said and stray.exists(), said
    code, said = _in_terminal(env, ["audit", "--fix"], b"y")
    assert code == 0 and "no disagreement left" in said, said
    assert not stray.exists() and (data / "quarantine" / "two" / stray.name).exists()


def test_audit_says_what_the_database_checked(tmp_path: Path, database_url: str) -> None:
    env, _data = _farm(tmp_path, 1, database_url)
    said = piwheels(env, "audit").stdout
    if database_url.startswith("sqlite"):
        assert "database intact: PRAGMA quick_check" in said, said
        return
    assert "database intact: the catalogs" in said and "amcheck is not installed" in said, said
    with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://", 1)) as conn:
        conn.execute("CREATE EXTENSION amcheck")
    said = piwheels(env, "audit").stdout
    assert "amcheck: " in said and "B-tree index(es) and every table's pages" in said, said
    assert "no disagreement" in said, said
