"""The real ``piwheels-ctl`` command, held at a gate so that several start at the same moment.

Run as ``python start_gate.py GO_FILE ARG...``: imports the command and what its first start
uses, creates ``GO_FILE.ready-<pid>``, waits for ``GO_FILE`` to exist, then runs
``piwheels-ctl ARG...`` in this process and exits with its exit code.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import piwheels_ctl.cli.building
import piwheels_ctl.cli.projects
import piwheels_ctl.farm.executors  # noqa: F401 (imported before the gate, not after it)
from piwheels_ctl.cli import main

WAIT_SECONDS = 300


def _wait(go: Path) -> None:
    Path(f"{go}.ready-{os.getpid()}").touch()
    deadline = time.monotonic() + WAIT_SECONDS
    while not go.exists():
        if time.monotonic() > deadline:
            sys.exit(f"{go} did not appear in {WAIT_SECONDS} s")
        time.sleep(0.001)


if __name__ == "__main__":
    _wait(Path(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
