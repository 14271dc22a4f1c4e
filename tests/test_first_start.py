"""Controllers starting together on a fresh database: every one starts, nothing is made twice."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import select

from piwheels_ctl.db.engine import Database, make_engine
from piwheels_ctl.db.models import Abi, Builder, BuilderPython

from helpers import clean_env, piwheels

GATE = Path(__file__).with_name("start_gate.py")
CONTROLLERS = 4


def _start_together(env: dict[str, str], go: Path, *args: str) -> list[tuple[int, str]]:
    """Run ``piwheels-ctl ARGS`` in CONTROLLERS processes released at once; (exit code, stderr) each."""
    procs = [
        subprocess.Popen(
            [sys.executable, str(GATE), str(go), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        for _ in range(CONTROLLERS)
    ]
    try:
        deadline = time.monotonic() + 120
        while len(list(go.parent.glob(f"{go.name}.ready-*"))) < CONTROLLERS:
            exited = [p.returncode for p in procs if p.poll() is not None]
            assert not exited, f"a controller exited {exited} before the start: {procs[0].communicate()}"
            assert time.monotonic() < deadline, "the controllers did not get ready in 120 s"
            time.sleep(0.01)
        go.touch()
        results = [(p.wait(timeout=600), p.communicate()[1]) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for ready in go.parent.glob(f"{go.name}.ready-*"):
        ready.unlink()
    go.unlink()
    return results


def test_controllers_starting_together_on_a_fresh_database_all_start(
    database_url: str, tmp_path: Path
) -> None:
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    env = clean_env(
        HOME=str(tmp_path),
        PIWHEELS_DATA_DIR=str(tmp_path / "data"),
        PIWHEELS_DATABASE_URL=database_url,
        PIWHEELS_UPSTREAM=str(upstream),
        PIWHEELS_PYTHONS=sys.executable,
        PIWHEELS_DEBIAN_MIRROR="",
    )
    go = tmp_path / "go"
    # Each first start in turn: the schema (every controller's `init`), then the local builder
    # with its ABI (every controller's `run`, here with nothing to build).
    for command in ("init", "run"):
        results = _start_together(env, go, command)
        failed = [(code, stderr) for code, stderr in results if code != 0]
        assert not failed, f"{len(failed)} of {CONTROLLERS} '{command}' exited non-zero: {failed}"

    db = Database(database_url)
    try:
        with db.reader() as session:
            builders = session.scalars(select(Builder.name)).all()
            abis = session.scalars(select(Abi.tag)).all()
            pythons = session.execute(select(BuilderPython.builder_id, BuilderPython.abi_id)).all()
    finally:
        db.dispose()
    assert builders == ["local"], f"builders: {builders}"
    assert len(abis) == 1, f"ABIs: {abis}"
    assert len(pythons) == 1, f"the local builder's interpreters: {Counter(pythons)}"
    # A second start finds everything made and changes nothing.
    piwheels(env, "run")


def _open_at_once(path: str, barrier: Any) -> str | None:
    """Open ``path`` through the controller's engine as soon as the others are ready; the error."""
    barrier.wait()
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            return str(conn.exec_driver_sql("PRAGMA journal_mode").scalar())
    except Exception as exc:
        return f"error: {exc}"
    finally:
        engine.dispose()


def test_connections_opening_a_fresh_sqlite_file_together_all_get_wal(tmp_path: Path) -> None:
    """The switch to WAL on a fresh file, by four connections at once: SQLite refuses it at once
    ("database is locked") to whichever would deadlock, about one round in five here; each round
    is a fresh file."""
    found: list[list[str | None]] = []
    with multiprocessing.Manager() as manager, multiprocessing.Pool(CONTROLLERS) as pool:
        for round_ in range(30):
            barrier = manager.Barrier(CONTROLLERS)
            path = str(tmp_path / f"fresh-{round_}.db")
            found.append(pool.starmap(_open_at_once, [(path, barrier)] * CONTROLLERS))
    failed = [modes for modes in found if modes != ["wal"] * CONTROLLERS]
    assert not failed, f"{len(failed)} of {len(found)} rounds: {failed[:3]}"
