"""Second chances, for real on the local builder: a build that times out is built once more with
a longer limit before the time-out is the project's, and says so; a builder at its load bound
refuses new builds, and the job waits in the queue, nobody's fault."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from piwheels_ctl.agent import buildstep, jobspec, workdirs
from piwheels_ctl.db.engine import Database
from piwheels_ctl.db.models import Build, Builder, BuildStatus, Handback

from helpers import clean_env, piwheels
from indexserver import IndexServer

HOST = "127.0.1.75"


def _upstream(tmp_path: Path, fixture_sdists: dict[str, Path], build_deps: Path, *names: str) -> Path:
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    for name in names:
        shutil.copy(fixture_sdists[name], upstream)
    for wheel in build_deps.glob("*.whl"):
        shutil.copy(wheel, upstream)
    return upstream


def _env(index: IndexServer, data: Path, **settings: str) -> dict[str, str]:
    """The settings of a one-machine farm on ``index``, with ``settings``."""
    return clean_env(
        PIWHEELS_DATA_DIR=str(data), PIWHEELS_UPSTREAM=index.url, PIWHEELS_DEBIAN_MIRROR="", **settings
    )


def _builds(data: Path) -> dict[str, Build]:
    db = Database(f"sqlite:///{data / 'piwheels.db'}")
    try:
        with db.reader() as session:
            return {b.version.project.name: b for b in session.scalars(select(Build))}
    finally:
        db.dispose()


@pytest.mark.build
def test_a_time_out_is_retried_once_with_a_longer_limit(
    tmp_path: Path, fixture_sdists: dict[str, Path], build_deps: Path
) -> None:
    # slow-ok sleeps 5 s in its build, past a 3 s limit, and is done long before 3 x 40 s;
    # hangs sleeps forever: past both limits.
    upstream = _upstream(tmp_path, fixture_sdists, build_deps, "slow-ok", "hangs")
    data = tmp_path / "data"
    with IndexServer(upstream, host=HOST) as index:
        env = _env(
            index, data, PIWHEELS_SLOTS="2", PIWHEELS_BUILD_TIMEOUT="3", PIWHEELS_TIMEOUT_RETRY_FACTOR="40"
        )
        piwheels(env, "init")
        piwheels(env, "add", "slow-ok", "hangs")
        # hangs' retry waits out its whole longer limit: 120 s.
        run = piwheels(env, "run", timeout=1200)
        piwheels(env, "publish")
        failures = json.loads(piwheels(env, "failures", "--json", "--no-hints").stdout)
        listed = piwheels(env, "failures", "--no-hints").stdout
    output = run.stdout + run.stderr
    builds = _builds(data)
    slow, hangs = builds["slow-ok"], builds["hangs"]
    assert (slow.status, slow.failure_reason) == (BuildStatus.SUCCESS, None), (slow.failure_evidence, output)
    assert (hangs.status, hangs.failure_reason) == (BuildStatus.FAILED, "timeout"), output
    expected = "the first attempt stopped at its limit of 3 s on local; built again with a limit of 120 s"
    for build in (slow, hangs):
        assert build.retried and expected in build.retried, f"{build.version.project.name}: {build.retried!r}"
        assert build.log_path is not None
        log = gzip.decompress((data / "logs" / build.log_path).read_bytes()).decode()
        # Right under the log's header (its rule of dashes), before what the build printed.
        body = log.split("-" * 20 + "\n", 1)[-1].lstrip("-\n")
        assert body.startswith("piwheels-ctl: retried:"), f"the stored log does not say so: {log[:400]!r}"
    # Exactly one retry each: the second time-out is final.
    assert output.count("retried: the first attempt") == 2, output
    assert "2 retried after a time-out" in output and "built 1, failed 1" in output, output
    assert [(f["name"], f["reason"], bool(f["retried"])) for f in failures] == [("hangs", "timeout", True)]
    assert expected in listed, listed
    page = json.loads((data / "www" / "project" / "slow-ok" / "json").read_bytes())
    cells = [cell for release in page["releases"] for cell in release["cells"].values()]
    assert [c["state"] for c in cells] == ["built"] and expected in (cells[0]["retried"] or ""), cells
    html = (data / "www" / "project" / "hangs" / "index.html").read_text()
    assert expected in html, "the failed build's page does not say it was retried"


@pytest.mark.build
def test_a_builder_at_its_load_bound_refuses_and_the_job_waits(
    tmp_path: Path, fixture_sdists: dict[str, Path], build_deps: Path
) -> None:
    upstream = _upstream(tmp_path, fixture_sdists, build_deps, "pure-ok")
    data = tmp_path / "data"
    with IndexServer(upstream, host=HOST) as index:
        # Any load is at a bound of 0: every build is refused.
        env = _env(index, data, PIWHEELS_SLOTS="1", PIWHEELS_BUILDER_MAX_LOAD="0")
        piwheels(env, "init")
        piwheels(env, "add", "pure-ok")
        busy = piwheels(env, "run")
        assert "refused by a busy builder" in busy.stdout and "remaining 1" in busy.stdout, busy.stdout
        assert "busy" in busy.stderr and "per CPU" in busy.stderr, busy.stderr
        assert _builds(data) == {}, "a refused build left a row"
        db = Database(f"sqlite:///{data / 'piwheels.db'}")
        try:
            with db.reader() as session:
                assert session.scalars(select(Handback)).all() == [], "a busy builder counted as a fault"
                local = session.scalars(select(Builder)).one()
                assert local.healthy and "per CPU" in local.info.get("busy", ""), local.info
        finally:
            db.dispose()
        # Once the bound allows it, the same job builds.
        done = piwheels({**env, "PIWHEELS_BUILDER_MAX_LOAD": "1000"}, "run")
        assert "built 1" in done.stdout, done.stdout + done.stderr


def test_the_agent_reads_its_load_from_the_fake_loadavg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "fake-loadavg"
    monkeypatch.setattr(workdirs, "LOADAVG", str(fake))
    fake.write_text("1000.00 3.00 2.00 4/321 12345\n")
    request = jobspec.request(
        "python3", "demo", "1.0", str(tmp_path / "out"), str(tmp_path / "log"), str(tmp_path / "work"),
        max_load=50.0,
    )  # fmt: skip
    answer = buildstep.build(request)
    assert answer["status"] == "busy" and "per CPU" in answer["error"], answer
    assert not (tmp_path / "work").exists(), "a busy builder started the build anyway"
    fake.write_text("not a load average\n")
    assert workdirs.load_per_cpu() is None
