"""The CLI read in 80 columns and through a pipe (journald, CI), on a farm with real builds."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from conftest import SiteFarm
from helpers import piwheels

pytestmark = pytest.mark.build


def _narrow(farm: SiteFarm, **more: str) -> dict[str, str]:
    return {**farm.env, "COLUMNS": "80", **more}


def test_status_in_80_columns_keeps_its_labels_whole_and_sizes_human(site_farm: SiteFarm) -> None:
    text = piwheels(_narrow(site_farm), "status").stdout
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines), text
    (size,) = [line for line in lines if "size of the wheels" in line]
    assert re.search(r"\d+\.\d KiB", size), size
    for label in ("asked for by NAME==VERSION", "covered upstream, not built", "queue: (version, ABI) pairs"):
        assert any(label in line for line in lines), f"{label!r} is not on one line:\n{text}"
    assert "bytes of wheels" not in text


def test_builders_list_in_80_columns_cuts_nothing(site_farm: SiteFarm) -> None:
    listing = piwheels(site_farm.env, "builders", "list", "--json").stdout
    text = piwheels(_narrow(site_farm), "builders", "list").stdout
    assert "…" not in text and all(len(line) <= 80 for line in text.splitlines()), text
    assert "this machine" in text and "local" in text, text
    for abi in re.findall(r'"([a-z0-9_]+-[a-z0-9_]+-linux_[a-z0-9_]+)"', listing):
        assert abi in text, f"{abi} is cut or missing:\n{text}"
    wide = piwheels(_narrow(site_farm), "builders", "list", "--wide").stdout
    assert "…" not in wide and "address" in wide and "this machine" in wide, wide


def test_run_in_a_pipe_prints_a_line_per_finished_build(site_farm: SiteFarm, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(site_farm.data, data, symlinks=True, ignore=shutil.ignore_patterns("work"))
    env = _narrow(site_farm, PIWHEELS_DATA_DIR=str(data))
    piwheels(env, "rebuild", "fails-header")
    run = piwheels(env, "run")
    lines = run.stdout.splitlines()
    built = [line for line in lines if line.startswith("pure-ok 0.9 ")]
    assert built and all(re.fullmatch(r"pure-ok 0\.9 \S+ built \d+\.\ds", line) for line in built), run.stdout
    failed = [line for line in lines if line.startswith("fails-header 1.0 ")]
    pattern = r"fails-header 1\.0 \S+ failed \d+\.\ds missing-header: no_such_header_xyz\.h"
    assert failed and all(re.fullmatch(pattern, line) for line in failed), run.stdout
    # A message longer than the 80 columns stays on its line.
    said = [line for line in run.stderr.splitlines() if line.startswith("failed fails-header==1.0")]
    assert said and all(line.endswith("missing-header (no_such_header_xyz.h)") for line in said), run.stderr
    assert any(len(line) > 80 for line in said), said
