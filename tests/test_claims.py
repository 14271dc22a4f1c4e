"""Two controllers on one database: every (version, ABI) is claimed and built exactly once."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import select

from piwheels_ctl.db.engine import Database
from piwheels_ctl.db.models import Abi, Build, Builder, Project, Version

WORKER = Path(__file__).with_name("claim_worker.py")
VERSIONS = 40
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def _queue(db: Database) -> tuple[set[tuple[int, int]], list[int], list[int]]:
    """Two ABIs, VERSIONS versions of three projects, two builders; the pairs to build."""
    with db.session() as session:
        abis = [
            Abi(tag=f"{py}-{py}-linux_x86_64", python_tag=py, abi_tag=py, platform_tag="linux_x86_64")
            for py in ("cp311", "cp312")
        ]
        builders = [Builder(name=f"fake-{n}") for n in ("a", "b")]
        session.add_all([*abis, *builders])
        projects = [Project(name=f"demo-{n}", display_name=f"demo-{n}", watched=True) for n in range(3)]
        for n in range(VERSIONS):
            projects[n % 3].versions.append(
                Version(
                    version=f"1.{n}",
                    release_time=T0 + timedelta(hours=n),
                    sdist_url=f"http://x/demo-1.{n}.tar.gz",
                    sdist_filename=f"demo-1.{n}.tar.gz",
                )
            )
        session.add_all(projects)
        session.flush()
        pairs = {(v.id, a.id) for p in projects for v in p.versions for a in abis}
        return pairs, [a.id for a in abis], [b.id for b in builders]


def test_two_controllers_build_every_pair_exactly_once(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    pairs, abi_ids, builder_ids = _queue(db)
    go = tmp_path / "go"
    abis = ",".join(map(str, abi_ids))
    command = [sys.executable, str(WORKER), database_url, str(tmp_path / "data")]
    workers = [
        subprocess.Popen(
            [*command, str(builder), abis, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        for builder in builder_ids
    ]
    try:
        # Both controllers are ready (imported, connected) before either claims anything.
        deadline = time.monotonic() + 120
        while not all(Path(f"{go}.ready-{b}").exists() for b in builder_ids):
            assert all(w.poll() is None for w in workers), "a controller exited before the start"
            assert time.monotonic() < deadline, "the controllers did not get ready in 120 s"
            time.sleep(0.01)
        go.touch()
        results = [w.communicate(timeout=300) for w in workers]
    finally:
        for w in workers:
            w.kill()
    for worker, (_stdout, stderr) in zip(workers, results, strict=True):
        assert worker.returncode == 0, f"a controller exited {worker.returncode}:\n{stderr}"
    reports = [json.loads(stdout) for stdout, _ in results]

    with db.session() as session:
        builds = session.execute(
            select(Build.version_id, Build.abi_id, Build.builder_id, Build.status).where(~Build.superseded)
        ).all()
    counts = Counter((b.version_id, b.abi_id) for b in builds)
    twice = {pair: n for pair, n in counts.items() if n > 1}
    assert not twice, f"pairs built more than once (pair: builds): {twice}; reports {reports}"
    missing = pairs - set(counts)
    assert not missing, f"{len(missing)} of {len(pairs)} pairs never built: {sorted(missing)[:10]}"
    assert set(counts) == pairs, f"builds of pairs not queued: {set(counts) - pairs}"
    assert all(b.status.value == "failed" for b in builds), f"statuses: {Counter(b.status for b in builds)}"
    by_builder = Counter(b.builder_id for b in builds)
    # Otherwise the race was never run: one controller did everything alone.
    assert all(by_builder[b] > 0 for b in builder_ids), f"builds per builder: {dict(by_builder)}"
    assert sum(r["failed"] for r in reports) == len(pairs), f"reports: {reports}"
    assert all(r["lost"] == 0 and r["handed_back"] == 0 for r in reports), f"reports: {reports}"
