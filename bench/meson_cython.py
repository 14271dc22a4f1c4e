"""Meson and Cython rebuilds against the caches: each sdist's cold build and warm rebuild by the agent.

    .venv/bin/python bench/meson_cython.py [--workload FILE] [--out DIR]

For each pinned project of the workload (default bench/workload-c.txt), all in one run, with uv
and the build requirements from PyPI (through this machine's proxy):
  prime   a first build with a compiler cache of its own: fills the build requirements' cache,
          so that neither of the next two downloads anything
  cold    an empty compiler cache (ccache and Cython's)
  warm    the same build again: the caches the cold build filled
The table gives each build's seconds (the agent's own duration), ccache's hits and misses and
the `.pyx` files Cython's cache gave ("Found compiled"): warm/cold is the caches' ratio.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from pypi_simple import PYPI_SIMPLE_ENDPOINT, PyPISimple  # noqa: E402

from piwheels_ctl.agent import buildstep  # noqa: E402
from piwheels_ctl.agent.jobspec import request  # noqa: E402
from piwheels_ctl.farm import frontend  # noqa: E402

from sdists import pip_env  # noqa: E402

PYTHON = "/usr/bin/python3"


def files_host() -> str:
    """The host PyPI's simple index sends for its files (the builds' network must reach it)."""
    with PyPISimple(PYPI_SIMPLE_ENDPOINT) as index:
        page = index.get_project_page("pip")
    return str(urllib.parse.urlsplit(page.packages[0].url).hostname)


def sdist(pin: str, folder: Path) -> Path:
    """The sdist of ``pin`` (name==version) from PyPI's simple index, checked against its sha256."""
    name, version = pin.split("==")
    with PyPISimple(PYPI_SIMPLE_ENDPOINT) as index:
        page = index.get_project_page(name)
    (package,) = [p for p in page.packages if p.version == version and p.package_type == "sdist"]
    target = folder / package.filename
    if not target.exists():
        with urllib.request.urlopen(package.url, timeout=300) as answer:
            data = answer.read()
        if hashlib.sha256(data).hexdigest() != package.digests["sha256"]:
            raise SystemExit(f"{package.filename}: not the sha256 PyPI gives")
        target.write_bytes(data)
    return target


def uv_wheel(folder: Path) -> Path:
    """The pinned uv for this machine, as the controller fetches it."""
    found = sorted(folder.glob(f"uv-{frontend.UV_VERSION}-*.whl"))
    if not found:
        os.system(
            f"{sys.executable} -m pip download -q --no-deps --only-binary :all: -d {folder} "
            f"--index-url {PYPI_SIMPLE_ENDPOINT} uv=={frontend.UV_VERSION}"
        )
        found = sorted(folder.glob(f"uv-{frontend.UV_VERSION}-*.whl"))
    return found[0]


def build(
    work: Path, name: str, version: str, source: Path, uv: Path, ccache: Path, tag: str, files: str
) -> dict[str, float]:
    """One build by the agent (its network: the index and the host of its files); its seconds,
    ccache counts and Cython cache hits."""
    log = work / f"{name}-{tag}.log"
    result = buildstep.build(request(
        PYTHON, name, version, str(work / f"outbox-{name}-{tag}"), str(log), str(work / "builds"),
        index_url=PYPI_SIMPLE_ENDPOINT, sdist_url=source.as_uri(),
        sdist_sha256=hashlib.sha256(source.read_bytes()).hexdigest(), frontend=str(uv),
        ccache_dir=str(ccache), deps_cache=str(work / "deps"), deps_cache_mb=4000, timeout=3600.0,
        network_allow=[files],  # the index sends for its files there
    ))  # fmt: skip
    text = log.read_text(errors="replace")
    if result["status"] != "success":
        raise SystemExit(f"{name} {tag}: {result['status']}\n{text[-3000:]}")
    counts = result.get("ccache") or {"hits": 0, "misses": 0}
    return {"seconds": float(result["duration"]), "hits": counts["hits"], "misses": counts["misses"],
            "cython": text.count("Found compiled")}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", type=Path, default=ROOT / "bench" / "workload-c.txt")
    parser.add_argument("--out", type=Path, default=Path("/tmp/piwheels-bench-meson"))
    args = parser.parse_args()
    pins = [line.strip() for line in args.workload.read_text().splitlines() if line.strip()]
    work: Path = args.out
    (work / "sdists").mkdir(parents=True, exist_ok=True)
    os.environ.update(pip_env())
    uv = uv_wheel(work / "sdists")
    files = files_host()
    rows = []
    for pin in pins:
        name, version = pin.split("==")
        source = sdist(pin, work / "sdists")
        for folder in ("prime-ccache", "ccache"):
            shutil.rmtree(work / folder, ignore_errors=True)
        figures = {"prime": build(work, name, version, source, uv, work / "prime-ccache", "prime", files)}
        figures["cold"] = build(work, name, version, source, uv, work / "ccache", "cold", files)
        figures["warm"] = build(work, name, version, source, uv, work / "ccache", "warm", files)
        rows.append((pin, figures))
        print(pin, json.dumps(figures), flush=True)
    print(
        "\n| project | cold s | warm s | warm/cold | ccache hits (warm) | misses (warm) | Cython from cache |"
    )
    print("|---|---|---|---|---|---|---|")
    for pin, f in rows:
        cold, warm = f["cold"], f["warm"]
        rate = 100 * warm["hits"] / (warm["hits"] + warm["misses"]) if warm["hits"] + warm["misses"] else 0.0
        ratio = cold["seconds"] / warm["seconds"]
        print(f"| {pin} | {cold['seconds']:.1f} | {warm['seconds']:.1f} | {ratio:.2f}x faster "
              f"| {warm['hits']} ({rate:.0f}%) | {warm['misses']} | {warm['cython']} |")  # fmt: skip


if __name__ == "__main__":
    main()
