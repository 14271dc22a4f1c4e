"""The pages for people, from a real farm: project pages and their JSON, logs over HTTP, statistics."""

from __future__ import annotations

import gzip
import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from conftest import PURE_HOME, PURE_SUMMARY, SiteFarm
from helpers import piwheels, serving

pytestmark = pytest.mark.build


def _json(farm: SiteFarm, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((farm.www / "project" / name / "json").read_bytes())
    return data


def _cells(farm: SiteFarm, name: str, version: str) -> dict[str, dict[str, Any]]:
    (release,) = [r for r in _json(farm, name)["releases"] if r["version"] == version]
    cells: dict[str, dict[str, Any]] = release["cells"]
    return cells


def test_project_json_has_every_state(site_farm: SiteFarm) -> None:
    pure = _json(site_farm, "pure-ok")
    assert [r["version"] for r in pure["releases"]] == ["1.0", "0.9", "0.8", "0.7"], pure["releases"]
    states = {tag: cell["state"] for tag, cell in _cells(site_farm, "pure-ok", "1.0").items()}
    # Built once for the first ABI; that none-any wheel covers the others.
    assert sorted(states.values())[0] == "built" and set(states.values()) <= {"built", "covered"}, states
    (wheel,) = pure["releases"][0]["files"]
    assert wheel["filename"] == "pure_ok-1.0-py3-none-any.whl" and len(wheel["sha256"]) == 64, wheel
    assert {c["state"] for c in _cells(site_farm, "pure-ok", "0.9").values()} == {"pending"}
    assert {c["state"] for c in _cells(site_farm, "pure-ok", "0.8").values()} == {"failed"}
    failed = list(_cells(site_farm, "fails-header", "1.0").values())
    assert {c["state"] for c in failed} == {"failed"}, failed
    assert {c["reason"] for c in failed} == {"missing-header"}, failed
    assert {c["detail"] for c in failed} == {"no_such_header_xyz.h"}, failed
    assert all(re.fullmatch(r"logs/fails-header/\d+\.log", c["log"]) for c in failed), failed
    skipped = list(_cells(site_farm, "py2-only", "1.0").values())
    assert {(c["state"], c["reason"]) for c in skipped} == {("skipped", "upstream supports Python 2 only")}
    assert {c["state"] for c in _cells(site_farm, "c-ext", "1.0").values()} == {"pending"}


def test_project_page_shows_cells_install_lines_and_hashes(site_farm: SiteFarm) -> None:
    html = (site_farm.www / "project" / "fails-header" / "index.html").read_text()
    assert "libnosuchheader-dev" in html, "the suggested package is not on the page"
    assert "(in the folder nosuch/ of /usr/include)" in html, "why the package is listed is not on the page"
    assert "fatal error: no_such_header_xyz.h" in html, "the evidence is not on the page"
    assert 'data-state="failed"' in html and "missing-header" in html and "no_such_header_xyz.h" in html
    assert re.search(r'href="\.\./\.\./logs/fails-header/\d+\.log"', html), html
    pure = (site_farm.www / "project" / "pure-ok" / "index.html").read_text()
    text = re.sub(r"<[^>]+>", "", pure)
    assert "pip install --index-url http://pi.example.org/simple/ pure-ok" in text
    assert "[[tool.uv.index]]" in text and "index-url = http://pi.example.org/simple/" in text
    wheel = _json(site_farm, "pure-ok")["releases"][0]["files"][0]
    assert wheel["sha256"] in pure
    assert 'href="../../simple/pure-ok/pure_ok-1.0-py3-none-any.whl"' in pure


def test_front_and_stats_pages_count_and_chart(site_farm: SiteFarm) -> None:
    front = (site_farm.www / "index.html").read_text()
    assert re.search(r"<b>4</b> projects", front), front
    assert "<svg" in front and "local" in front
    stats = (site_farm.www / "stats" / "index.html").read_text()
    assert stats.count("<svg") == 3, stats
    assert "missing-header" in stats  # the failure reasons chart
    assert "http" not in re.sub(r'xmlns="http://www\.w3\.org/2000/svg"|http://pi\.example\.org/', "", stats)
    lists = site_farm.www / "project"
    link = re.compile(r'<li><a href="([^"/]+)/">')
    assert link.findall((lists / "index-c.html").read_text()) == ["c-ext"]
    listed = [link.findall(p.read_text()) for p in sorted(lists.glob("index-*.html"))]
    assert [name for names in listed for name in names] == ["c-ext", "fails-header", "pure-ok", "py2-only"]
    assert len(listed) == 27, "a list for the digits and one for each letter"
    index = (lists / "index.html").read_text()
    assert 'href="index-0.html">0\N{EN DASH}9</a>' in index and 'href="index-z.html">Z</a>' in index, index


def test_logs_are_served_gzipped_or_inflated(site_farm: SiteFarm) -> None:
    log = _cells(site_farm, "fails-header", "1.0")
    path = next(iter(log.values()))["log"]
    stored = (site_farm.data / "logs" / path.removeprefix("logs/")).with_suffix(".log.gz")
    text = gzip.decompress(stored.read_bytes())
    assert b"no_such_header_xyz.h" in text
    with serving(site_farm.www) as base:
        request = urllib.request.Request(f"{base}/{path}", headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.headers["Content-Encoding"] == "gzip", dict(response.headers)
            assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
            assert response.headers["X-Content-Type-Options"] == "nosniff"  # never sniffed as HTML
            assert gzip.decompress(response.read()) == text
        request = urllib.request.Request(f"{base}/{path}", headers={"Accept-Encoding": "identity"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.headers.get("Content-Encoding") is None, dict(response.headers)
            assert response.read() == text
        with urllib.request.urlopen(f"{base}/project/pure-ok/json", timeout=30) as response:
            assert response.headers["Content-Type"] == "application/json"
        for bad in ("/logs/../piwheels.db", "/logs/fails-header/1.log.gz", "/logs/x/%2e%2e/y.log"):
            try:
                urllib.request.urlopen(base + bad, timeout=30)
            except urllib.error.HTTPError as exc:
                assert exc.code == 404, (bad, exc.code)
            else:
                raise AssertionError(f"{bad} was served")


def test_publish_rewrites_only_dirty_project_pages(site_farm: SiteFarm, tmp_path: Path) -> None:
    pages = {p: p.stat().st_mtime_ns for p in (site_farm.www / "project").glob("*/index.html")}
    piwheels(site_farm.env, "publish")
    assert {p: p.stat().st_mtime_ns for p in pages} == pages


def test_a_stored_log_starts_with_its_header_and_hides_the_controllers_paths(site_farm: SiteFarm) -> None:
    cell = next(iter(_cells(site_farm, "fails-header", "1.0").values()))
    stored = (site_farm.data / "logs" / cell["log"].removeprefix("logs/")).with_suffix(".log.gz")
    text = gzip.decompress(stored.read_bytes()).decode()
    lines = text.splitlines()
    assert lines[0].startswith("fails-header 1.0  (") and lines[1] == "builder   local", lines[:8]
    assert re.fullmatch(r"started   \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", lines[2]), lines[:8]
    assert lines[3] == "result    failed: missing-header (no_such_header_xyz.h)", lines[:8]
    assert re.fullmatch(r"duration  \d+\.\d s", lines[4]) and lines[6] == "command:", lines[:8]
    assert not text.startswith("$"), "the command line still opens the log"
    wide = [line for line in lines[: lines.index("-" * 78)] if len(line) > 80 and " " in line.strip(" \\")]
    assert wide == [], "the header is not wrapped"
    data = str(site_farm.data.resolve())
    assert data not in text and str(site_farm.data) not in text, (
        f"the controller's data dir is shown:\n{text}"
    )
    assert "--out-dir ./wheels" in text and "<data>/frontends/" in text, text[:1500]
    assert re.search(r"Failed to build `\./fails_header-1\.0\.tar\.gz`", text), text
    assert "no_such_header_xyz.h" in text


def test_logs_takes_name_or_name_and_version(site_farm: SiteFarm) -> None:
    newest = piwheels(site_farm.env, "logs", "pure-ok").stdout
    assert newest.startswith("==> pure-ok==1.0 "), newest[:300]
    older = piwheels(site_farm.env, "logs", "pure-ok==0.8").stdout
    assert older.startswith("==> pure-ok==0.8 ") and "missing-header" in older, older[:300]
    assert piwheels(site_farm.env, "logs", "pure-ok", "0.8").stdout == older  # the old form still works


def test_a_project_page_answers_first_what_it_is_and_what_is_built(site_farm: SiteFarm) -> None:
    summary = _json(site_farm, "pure-ok")["summary"]
    assert (summary["summary"], summary["homepage"], summary["newest_built"]) == (
        PURE_SUMMARY,
        PURE_HOME,
        "1.0",
    )
    assert summary["abis"] and {v for _, v in summary["abis"].values()} == {"1.0"}, summary
    assert {s for s, _ in summary["abis"].values()} <= {"built", "covered"}, summary
    html = (site_farm.www / "project" / "pure-ok" / "index.html").read_text()
    top, _, rest = html.partition("<h2>Install</h2>")
    assert PURE_SUMMARY in top and f'href="{PURE_HOME}"' in top, top
    assert 'href="#v1.0"><b>1.0</b></a>' in top and 'data-state="built"' in top, top
    # The releases asked for or built come first, each with its files right under it...
    shown, _, folded = rest.partition('<details id="not-requested">')
    assert folded, "no folded releases on the page"
    for version in ("1.0", "0.9", "0.8"):
        assert f'id="v{version}"' in shown, f"{version} is not among the shown releases"
    first = shown.split('<tbody class="release" id="v1.0">')[1].split("</tbody>")[0]
    assert "pure_ok-1.0-py3-none-any.whl" in first and "KiB</span>" in first, first
    assert "sha256 " in first, first
    # ...and the release nobody asked for is folded away.
    assert "1 other release, not requested" in folded and 'id="v0.7"' in folded, folded[:500]
    assert 'id="v0.7"' not in shown
