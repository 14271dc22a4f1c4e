"""The CLI on real input: import, publish, serve and install; bad input changes nothing."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from debian_roots import bullseye_pip_root, pip_install_in_root
from helpers import clean_env, debian_venv, free_port, piwheels, serving, sqlite_dump, tree_snapshot
from indexserver import IndexServer
from wheels import make_wheel


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A data dir with a database and two published versions of ``pick``."""
    empty = tmp_path / "upstream"
    empty.mkdir()
    env = clean_env(PIWHEELS_DATA_DIR=str(tmp_path / "data"), PIWHEELS_UPSTREAM=str(empty))
    piwheels(env, "init")
    dist = tmp_path / "dist"
    dist.mkdir()
    old = make_wheel(dist, "pick", "1.0")
    new = make_wheel(dist, "pick", "2.0", requires=("no-such-dependency-xyz>=1",))
    piwheels(env, "import", str(old), str(new))
    piwheels(env, "publish")
    return env


@pytest.fixture
def served(env: dict[str, str]) -> Iterator[tuple[str, list[str]]]:
    """The published index on a real server, and the paths it was asked for."""
    paths: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            paths.append(record.getMessage())

    handler = Collect()
    logger = logging.getLogger("piwheels_ctl.publish.server")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with serving(Path(env["PIWHEELS_DATA_DIR"]) / "www") as base:
            yield f"{base}/simple/", paths
    finally:
        logger.removeHandler(handler)


def test_pip_resolves_with_metadata_files_and_downloads_only_what_it_installs(
    tmp_path: Path, served: tuple[str, list[str]]
) -> None:
    url, requests = served
    _assert_pip_installs_through_metadata(debian_venv(tmp_path / "venv"), url, requests)


def _assert_pip_installs_through_metadata(python: Path, url: str, requests: list[str]) -> None:
    """``python``'s pip installs pick 1.0, having looked at 2.0 through its .metadata file only."""
    proc = subprocess.run(
        [str(python), "-m", "pip", "install", "--index-url", url, "pick"],
        env=clean_env(PIP_CONFIG_FILE="/dev/null", PIP_DISABLE_PIP_VERSION_CHECK="1"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Successfully installed pick-1.0" in proc.stdout
    log = "\n".join(requests)
    # pick 2.0 was looked at through its .metadata file only: its dependency does not exist.
    assert "pick-2.0-py3-none-any.whl.metadata" in log, log
    assert [
        line for line in requests if "pick-2.0-py3-none-any.whl " in line + " " and ".metadata" not in line
    ] == []
    assert "pick-1.0-py3-none-any.whl" in log


# Debian bookworm's pip 23.0.1 reading a JSON page's files as it does (pip/_internal/models/link.py).
_PIP_READS_JSON = """
import json, sys
from pip._internal.models.link import Link
for entry in json.load(open(sys.argv[1]))["files"]:
    Link.from_json(entry, "http://index/simple/pick/").metadata_link()
"""


def test_pages_of_an_older_release_are_rewritten_by_the_next_publish(
    tmp_path: Path, env: dict[str, str], served: tuple[str, list[str]]
) -> None:
    url, requests = served
    www = Path(env["PIWHEELS_DATA_DIR"]) / "www"
    page = www / "simple" / "pick" / "index.json"
    # The tree as 0f4a855 left it: no format stamp, and JSON pages whose files carry PEP 658's
    # "dist-info-metadata" object next to "core-metadata" (its publisher.py _project_json),
    # written as it wrote them (keys sorted, compact, UTF-8).
    data = json.loads(page.read_bytes())
    for entry in data["files"]:
        entry["dist-info-metadata"] = {"sha256": entry["core-metadata"]["sha256"]}
    page.write_bytes(json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode())
    (www / "piwheels-format").unlink()
    python = debian_venv(tmp_path / "venv")
    crash = subprocess.run([str(python), "-c", _PIP_READS_JSON, str(page)], capture_output=True, text=True)
    assert "TypeError" in crash.stderr, crash.stderr  # what made Debian's pip fail on such a farm
    # Nothing is dirty: only the stamp tells the publish that every page is to be rewritten.
    proc = piwheels(env, "publish")
    assert "older release" in proc.stdout + proc.stderr
    assert (www / "piwheels-format").read_text() == "2\n"
    assert "dist-info-metadata" not in page.read_text(), page.read_text()
    subprocess.run([str(python), "-c", _PIP_READS_JSON, str(page)], check=True)
    _assert_pip_installs_through_metadata(python, url, requests)
    # Once rewritten, a publish leaves the tree alone.
    before = tree_snapshot(www)
    proc = piwheels(env, "publish")
    assert "older release" not in proc.stdout + proc.stderr
    assert tree_snapshot(www) == before


def test_status_json_counts_imported_files(env: dict[str, str]) -> None:
    status = json.loads(piwheels(env, "status", "--json").stdout)
    assert status["files"] == 2
    assert status["projects"] == 1


def _state(env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    data = Path(env["PIWHEELS_DATA_DIR"])
    return sqlite_dump(data / "piwheels.db"), tree_snapshot(data / "www")


def _closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/simple/"


@pytest.mark.parametrize(
    ("args", "overrides", "expected"),
    [
        (["add", "foo>>=1"], {}, "'foo>>=1' is not a valid requirement"),
        (["add", "pick==not-a-version!"], {}, "not a valid requirement"),
        (["add", "no-such-project"], {}, "no-such-project: the upstream"),
        (["status"], {"PIWHEELS_SLOTZ": "3"}, "PIWHEELS_SLOTZ: unknown setting"),
        (["status"], {"PIWHEELS_SLOTS": "many"}, "PIWHEELS_SLOTS"),
        (["add", "pick"], {"PIWHEELS_UPSTREAM": "CLOSED"}, "127.0.0.1"),
        (["logs", "pick", "9.9"], {}, "no version 9.9"),
        (["rebuild", "nothing-here"], {}, "nothing-here: not a known project"),
        (["import", "BROKEN"], {}, "not a valid wheel archive"),
        (["import", "/no/such/file.whl"], {}, "/no/such/file.whl: no such file"),
    ],
    ids=[
        "malformed-requirement",
        "bad-version",
        "unknown-project",
        "unknown-config-key",
        "bad-config-value",
        "unreachable-upstream",
        "unknown-version",
        "unknown-project-rebuild",
        "not-a-zip",
        "missing-wheel",
    ],
)
def test_bad_input_is_one_clear_line_and_changes_nothing(
    env: dict[str, str], tmp_path: Path, args: list[str], overrides: dict[str, str], expected: str
) -> None:
    before = _state(env)
    overrides = {k: (_closed_port_url() if v == "CLOSED" else v) for k, v in overrides.items()}
    if args == ["import", "BROKEN"]:
        broken = tmp_path / "broken-1.0-py3-none-any.whl"
        broken.write_bytes(b"this is not a zip file")
        args = ["import", str(broken)]
    proc = piwheels({**env, **overrides}, *args, check=False)
    assert proc.returncode != 0
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert _state(env) == before


def test_config_file_with_unknown_key_names_file_and_key(env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "piwheels.toml"
    config.write_text('data_dir = "x"\nbuild_timout = 5\n')
    proc = piwheels({**env, "PIWHEELS_CONFIG": str(config)}, "status", check=False)
    assert proc.returncode == 2
    assert f"{config}: build_timout: unknown setting" in proc.stderr


def test_upstream_page_that_is_garbage_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "index"
    folder.mkdir()
    with IndexServer(folder) as index:
        index.canned["/simple/pick/"] = (200, "application/vnd.pypi.simple.v1+json", b"{not json")
        before = _state(env)
        proc = piwheels({**env, "PIWHEELS_UPSTREAM": index.url}, "add", "pick", check=False)
    assert proc.returncode != 0
    assert "/simple/pick/" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert _state(env) == before


def test_sync_costs_one_304_per_unchanged_project_and_picks_up_new_versions(tmp_path: Path) -> None:
    folder = tmp_path / "index"
    folder.mkdir()
    # A version with no sdist and no wheel for our platforms: it waits as no-sdist. (A wheel that
    # installs here would cover it: tests/test_mirror.py.)
    make_wheel(folder, "binonly", "1.0", tag="cp311-cp311-win_amd64")
    (folder / "demo-1.0.tar.gz").write_bytes(b"sdist")
    with IndexServer(folder) as index:
        env = clean_env(PIWHEELS_DATA_DIR=str(tmp_path / "data"), PIWHEELS_UPSTREAM=index.url)
        piwheels(env, "init")
        piwheels(env, "add", "demo", "binonly")
        index.requests.clear()
        assert "0 project(s) changed" in piwheels(env, "sync").stdout
        assert sorted(status for _m, p, status in index.requests if p != "/simple/") == [304, 304]
        (folder / "demo-2.0.tar.gz").write_bytes(b"newer sdist")
        assert "1 project(s) changed, 1 new version(s)" in piwheels(env, "sync").stdout
        queue = json.loads(piwheels(env, "queue", "--json").stdout)
        assert [(j["name"], j["version"]) for j in queue] == [("demo", "2.0"), ("demo", "1.0")]
        status = json.loads(piwheels(env, "status", "--json").stdout)
        assert status["no_sdist"] == 1, status
        shown = piwheels(env, "queue").stdout
        assert "binonly" in shown and "no-sdist" in shown, shown
        # The sdist comes later: the version is queued.
        (folder / "binonly-1.0.tar.gz").write_bytes(b"late sdist")
        assert "1 project(s) changed, 0 new version(s)" in piwheels(env, "sync").stdout
        queue = json.loads(piwheels(env, "queue", "--json").stdout)
        status = json.loads(piwheels(env, "status", "--json").stdout)
    assert ("binonly", "1.0") in [(j["name"], j["version"]) for j in queue], queue
    assert status["no_sdist"] == 0, status


def test_sync_all_records_every_name_once(tmp_path: Path) -> None:
    folder = tmp_path / "index"
    folder.mkdir()
    for name in ("alpha", "Beta_Two", "gamma"):
        (folder / f"{name}-1.0.tar.gz").write_bytes(b"sdist")
    with IndexServer(folder) as index:
        env = clean_env(PIWHEELS_DATA_DIR=str(tmp_path / "data"), PIWHEELS_UPSTREAM=index.url)
        piwheels(env, "init")
        assert "3 new project name(s)" in piwheels(env, "sync", "--all").stdout
        assert "0 new project name(s)" in piwheels(env, "sync", "--all").stdout
    status = json.loads(piwheels(env, "status", "--json").stdout)
    assert status["projects"] == 3 and status["watched"] == 0 and status["pending"] == 0


def test_bullseye_pip_installs_from_serve(served: tuple[str, list[str]]) -> None:
    if os.geteuid() != 0:
        pytest.skip("a Debian bullseye root (chroot) needs root")
    if shutil.which("debootstrap") is None:
        pytest.fail("debootstrap is needed (apt-get install debootstrap)", pytrace=False)
    url, requests = served
    done = pip_install_in_root(bullseye_pip_root(), url, ["pick"])
    assert "pip 20.3.4 " in done.stdout, done.stdout + done.stderr  # Debian bullseye's own
    assert done.returncode == 0 and "Successfully installed pick-1.0" in done.stdout, (
        done.stdout + done.stderr
    )
    assert any("pick-1.0-py3-none-any.whl" in line for line in requests), requests
