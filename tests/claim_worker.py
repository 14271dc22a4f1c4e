"""One controller for the claim race tests: a Runner with fake builders, started on a signal.

Run as ``python claim_worker.py DATABASE_URL DATA_DIR BUILDER_ID ABI_ID[,ABI_ID...] GO_FILE``;
prints the run's report as JSON.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path

from piwheels_ctl.builds.runner import Runner
from piwheels_ctl.config import Settings
from piwheels_ctl.db.engine import Database
from piwheels_ctl.farm.executors import Outcome
from piwheels_ctl.queue.claims import Job

# Long enough that the other controller claims while this one's builds run.
BUILD_SECONDS = 0.02


class FakeFailingExecutor:
    """A fake builder: every build fails at once with a canned log (the claims are under test)."""

    def __init__(self, builder_id: int, abi_ids: list[int], work: Path) -> None:
        self.builder_id = builder_id
        self.name = f"fake-{builder_id}"
        self.slots = 3
        self.pythons = dict.fromkeys(abi_ids, "/nonexistent/python")
        self.retry_at: datetime | None = None
        self.failures = 0
        self.release = None  # no OS release: it takes no check jobs
        self.cross: dict[int, str] = {}  # no cross builds
        self.work = work

    def build(self, job: Job, build_id: int) -> Outcome:
        time.sleep(BUILD_SECONDS)
        log = self.work / f"{build_id}.log"
        log.write_text("error: fake build failure\n")
        result = {"status": "failed", "duration": BUILD_SECONDS}
        return Outcome(job=job, build_id=build_id, result=result, outbox=self.work, log=log)

    def finish(self, outcome: Outcome) -> None:
        outcome.log.unlink(missing_ok=True)

    def kill_all(self) -> None:
        pass

    def close(self) -> None:
        pass


def main(url: str, data_dir: str, builder_id: str, abi_ids: str, go_file: str) -> None:
    settings = Settings(data_dir=Path(data_dir), database_url=url, build_timeout=600)
    work = Path(data_dir) / f"work-{builder_id}"
    work.mkdir(parents=True, exist_ok=True)
    db = Database(url)
    executor = FakeFailingExecutor(int(builder_id), [int(a) for a in abi_ids.split(",")], work)
    runner = Runner(db, settings, [executor])
    Path(f"{go_file}.ready-{builder_id}").touch()
    while not Path(go_file).exists():
        time.sleep(0.005)
    report = runner.run()
    db.dispose()
    print(json.dumps({"built": report.built, "failed": report.failed, "lost": report.lost,
                      "handed_back": report.handed_back, "errors": report.builder_errors}))  # fmt: skip


if __name__ == "__main__":
    main(*sys.argv[1:])
