"""The published site in a real browser: headless Chromium opens the front page, the statistics
and a project page served by ``piwheels-ctl serve``'s server, at desktop and phone width.

Screenshots are kept in a folder the test prints (pytest's temporary folder, or
``$SCREENSHOTS_DIR``); ``docs/screenshots/`` holds copies of the desktop ones.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from browser import Page, chromium
from conftest import SiteFarm
from helpers import piwheels, serving

pytestmark = pytest.mark.build

WIDTHS = {"desktop": 1280, "phone": 400}


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("SCREENSHOTS_DIR") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots in {folder}")
    return folder


@pytest.fixture(scope="module")
def site(site_farm: SiteFarm) -> Iterator[str]:
    with serving(site_farm.www) as base:
        yield base


@pytest.fixture
def page() -> Iterator[Page]:
    with chromium() as tab:
        yield tab


def _visit(page: Page, site: str, path: str, shots: Path, name: str) -> None:
    """Open ``path`` at each width, screenshot it; nothing may fail or leave the loopback."""
    for label, width in WIDTHS.items():
        page.open(site + path, width)
        shot = page.screenshot(shots / f"{name}-{label}.png", width)
        assert shot.stat().st_size > 5000, f"{shot}: {shot.stat().st_size} bytes, an empty page?"
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} at {width} px is {overflow} px wider than the screen"
    outside = [url for url in page.requests if not url.startswith((site + "/", "data:", "about:"))]
    assert outside == [], f"requests that left the loopback: {outside}"
    assert page.errors == [], f"errors on {path}: {page.errors}"


def test_project_page_in_chromium(page: Page, site: str, shots: Path) -> None:
    _visit(page, site, "/project/pure-ok/", shots, "project")
    states = page.evaluate(
        "Array.from(document.querySelectorAll('#releases td')).map(td => td.dataset.state)"
    )
    assert {"built", "failed", "pending"} <= set(states), states
    failed = page.evaluate(
        "Array.from(document.querySelectorAll('#releases td.failed')).map(td =>"
        " [td.querySelector('.reason').textContent, td.querySelector('a.log').href])"
    )
    assert failed and all("missing-header" in reason for reason, _ in failed), failed
    fixes = page.evaluate(
        "Array.from(document.querySelectorAll('#releases td.failed')).map(td => td.textContent)"
    )
    assert all("libnosuchheader-dev" in text for text in fixes), f"no suggested package: {fixes}"
    install = page.evaluate("document.getElementById('install').textContent")
    assert install == "pip install --index-url http://pi.example.org/simple/ pure-ok", install
    # The summary comes first; the release nobody asked for is folded away until opened.
    top = page.evaluate("document.getElementById('summary').getBoundingClientRect().top")
    first = page.evaluate("document.getElementById('releases').getBoundingClientRect().top")
    assert top < first, (top, first)
    visible = "document.querySelector('#v0\\\\.7 th').checkVisibility()"
    assert page.evaluate(visible) is False, "the release not requested is shown"
    page.evaluate("document.querySelector('#not-requested summary').click()")
    assert page.evaluate(visible) is True, "opening the folded releases does not show them"
    # The log link works, and the browser shows it as text.
    page.open(failed[0][1], 1280)
    text = page.evaluate("document.body.innerText")
    assert "no_such_header_xyz.h" in text, text[:500]


def test_stats_page_in_chromium(page: Page, site: str, shots: Path) -> None:
    _visit(page, site, "/stats/", shots, "stats")
    charts = page.evaluate(
        "Array.from(document.querySelectorAll('svg.chart')).map(svg =>"
        " [svg.getAttribute('aria-label'), svg.querySelectorAll('rect, circle').length,"
        "  svg.getBoundingClientRect().height])"
    )
    assert len(charts) == 3, charts
    assert all(marks > 0 and height > 30 for _, marks, height in charts), charts
    reasons = page.evaluate("document.querySelectorAll('svg.chart')[2].textContent")
    assert "missing-header" in reasons, reasons
    rows = page.evaluate("document.querySelectorAll('#success tbody tr').length")
    assert rows >= 1, rows


def test_front_page_in_chromium(page: Page, site: str, shots: Path) -> None:
    _visit(page, site, "/", shots, "front")
    figures = page.evaluate("document.getElementById('figures').innerText")
    assert "4\nprojects" in figures or "4 projects" in figures, figures
    builders = page.evaluate("document.querySelector('#builders tbody').innerText")
    assert "local" in builders, builders
    assert page.evaluate("document.querySelectorAll('svg.chart rect').length") > 0
    # The search box goes straight to a project page, with no server behind it.
    page.evaluate("document.getElementById('q').value = 'Fails_Header'")
    page.evaluate("document.querySelector('#search button').click()")
    page.wait_for("Page.loadEventFired")
    heading = page.evaluate("[location.pathname, document.querySelector('h1').textContent]")
    assert heading == ["/project/fails-header/", "fails_header"], heading  # as the upstream spells it
    assert page.errors == [], page.errors


def test_the_lists_of_projects_lead_to_a_project(page: Page, site: str, shots: Path) -> None:
    _visit(page, site, "/project/index-p.html", shots, "projects-p")
    _visit(page, site, "/project/", shots, "projects")
    page.evaluate("document.querySelector('#initials a[href=\"index-p.html\"]').click()")
    page.wait_for("Page.loadEventFired")
    listed = page.evaluate("[...document.querySelectorAll('#projects a')].map(a => a.textContent)")
    assert listed == ["pure_ok", "py2_only"], listed  # as the upstream spells them
    page.evaluate("document.querySelector('#projects a').click()")
    page.wait_for("Page.loadEventFired")
    heading = page.evaluate("[location.pathname, document.querySelector('h1').textContent]")
    assert heading == ["/project/pure-ok/", "pure_ok"], heading
    assert page.errors == [], page.errors


def test_install_lines_follow_the_address_without_public_url(
    page: Page, site_farm: SiteFarm, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(site_farm.data, data, ignore=shutil.ignore_patterns("work", "ccache", "deps-cache"))
    env = {k: v for k, v in site_farm.env.items() if k != "PIWHEELS_PUBLIC_URL"}
    piwheels({**env, "PIWHEELS_DATA_DIR": str(data)}, "publish", "--full")
    with serving(data / "www") as base:
        assert not base.endswith(":8080")
        page.open(base + "/project/pure-ok/", 1280)
        install = page.evaluate("document.getElementById('install').textContent")
        assert install == f"pip install --index-url {base}/simple/ pure-ok", install
        page.open(base + "/", 1280)
        front = page.evaluate("document.querySelector('main').innerText")
        assert f"pip install --index-url {base}/simple/ NAME" in front, front
        assert page.errors == [], page.errors
