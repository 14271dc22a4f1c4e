"""A farm's shared compiler cache: the second builder's build of the same versions against a cold one.

    .venv/bin/python bench/shared_ccache.py [--workload FILE] [--only N] [--out DIR]

Two builders are real sshd hosts on loopback (127.0.1.30 and .31), the cache a real nginx on
127.0.1.32 configured by the master role's template (tests/cacheserver.py). All in one run:
  cold     builder 1 builds the workload: empty local ccache, empty shared cache (it fills it)
  shared   builder 2 builds the same versions again (`rebuild`): empty local ccache, the
           shared cache that builder 1 filled
  control  builder 2 once more, its local ccache emptied, the shared cache off: a cold build on
           the same builder, so that the ratio is the cache's, not the builder's
This machine has one CPython, so builder 2 builds for the same ABI; see docs/benchmarks.md for
what another ABI can share. The sdists and their build dependencies are downloaded first (as
bench/pipeline.py does, into the same kind of folder); no timed step touches the network.
The downloads are kept in ``--out`` for the next run: give another ``--out`` for another
workload or ``--only``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from pipeline import PIWHEELS, pip, pip_env, prepare, sh  # noqa: E402 - the same downloads as the pipeline's
from pypi_simple import PYPI_SIMPLE_ENDPOINT  # noqa: E402

from piwheels_ctl.farm.frontend import pip_version  # noqa: E402

from cacheserver import CacheServer  # noqa: E402 - the test servers live with the tests
from sshd import SshHost, start_ssh_host  # noqa: E402

BUILDERS = [("127.0.1.30", "pwccache1"), ("127.0.1.31", "pwccache2")]
CACHE_ADDRESS = "127.0.1.32"


def farm(data: Path, upstream: Path, cache_url: str | None) -> dict[str, str]:
    """A new controller's environment (and database), remote builders only."""
    shutil.rmtree(data, ignore_errors=True)
    env = pip_env(PIWHEELS_DATA_DIR=str(data), PIWHEELS_UPSTREAM=str(upstream),
                  PIWHEELS_LOCAL_BUILDER="false", PIWHEELS_BUILD_TIMEOUT="1800",
                  PIWHEELS_MIN_FREE_MB="50")  # fmt: skip
    if cache_url:
        env["PIWHEELS_CCACHE_REMOTE_URL"] = cache_url
    sh([str(PIWHEELS), "init"], env)
    return env


def register(env: dict[str, str], name: str, host: SshHost) -> str:
    """Add ``host`` as builder ``name`` (2 slots); its shared-cache state as `builders list` says."""
    sh([str(PIWHEELS), "builders", "add", name, "--host", host.address, "--port", str(host.port),
        "--user", host.user, "--key", str(host.key_file), "--python", "/usr/bin/python3",
        "--slots", "2", "--trust-host-key"], env)  # fmt: skip
    rows = json.loads(sh([str(PIWHEELS), "builders", "list", "--json"], env))
    return str(next(r for r in rows if r["name"] == name)["ccache_remote"])


def timed_run(env: dict[str, str], pins: list[str]) -> float:
    start = time.perf_counter()
    out = sh([str(PIWHEELS), "run"], env)
    seconds = time.perf_counter() - start
    if f"built {len(pins)}, failed 0" not in out:
        raise SystemExit(f"not all {len(pins)} built: {out[-2000:]}")
    return seconds


def lookups(cache: CacheServer, since: int) -> tuple[int, int, int]:
    """(GETs found, GETs, PUTs) nginx logged after its first ``since`` requests."""
    requests = cache.requests("")[since:]
    gets = [status for method, status in requests if method == "GET"]
    return sum(s == 200 for s in gets), len(gets), sum(m == "PUT" for m, _ in requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", type=Path, default=ROOT / "bench" / "workload-a.txt")
    parser.add_argument("--out", type=Path, default=Path("/tmp/piwheels-bench-shared-ccache"))
    parser.add_argument("--only", type=int, help="Use the first N projects (a smoke run).")
    args = parser.parse_args()
    pins = [line.strip() for line in args.workload.read_text().splitlines() if line.strip()]
    pins = pins[: args.only] if args.only else pins
    work: Path = args.out
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)  # the builders' users read the sdists from here
    upstream, _deps = prepare(work, pins)
    frontend = f"pip=={pip_version(sys.version_info[:2])}"  # the builds' pinned pip, from the same folder
    sh(pip("download", "--no-deps", "--only-binary", ":all:", "-d", str(upstream), "--index-url",
           PYPI_SIMPLE_ENDPOINT, frontend))  # fmt: skip
    hosts_root = Path(tempfile.mkdtemp(prefix="piwheels-shared-ccache-"))
    hosts_root.chmod(0o755)
    nginx = work / "nginx"
    shutil.rmtree(nginx, ignore_errors=True)
    nginx.mkdir()
    hosts = [start_ssh_host(hosts_root, address, user) for address, user in BUILDERS]
    figures: dict[str, object] = {"projects": len(pins)}
    try:
        with CacheServer(nginx, CACHE_ADDRESS, os.urandom(8).hex(), ["127.0.0.1"]) as cache:
            env = farm(work / "data", upstream, cache.url)
            figures["builder 1"] = register(env, "b1", hosts[0])
            sh([str(PIWHEELS), "add", *pins], env)
            before = len(cache.requests(""))
            cold = timed_run(env, pins)
            figures["cold_requests"] = lookups(cache, before)

            sh([str(PIWHEELS), "builders", "remove", "b1"], env)
            figures["builder 2"] = register(env, "b2", hosts[1])
            for pin in pins:
                sh([str(PIWHEELS), "rebuild", pin], env)
            before = len(cache.requests(""))
            shared = timed_run(env, pins)
            found, gets, puts = lookups(cache, before)

            shutil.rmtree(hosts[1].home / "piwheels" / "ccache" / "projects")
            env = farm(work / "data-control", upstream, None)
            figures["builder 2, control"] = register(env, "b2", hosts[1])
            sh([str(PIWHEELS), "add", *pins], env)
            control = timed_run(env, pins)
    finally:
        for host in hosts:
            host.stop()
        shutil.rmtree(hosts_root, ignore_errors=True)
    figures.update(cold=cold, shared=shared, control=control, shared_requests=(found, gets, puts))
    (work / "figures.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
    print(f"\n{len(pins)} projects, 2 slots a builder\n\n| case | wall s | ratio |\n|---|---|---|")
    print(f"| builder 1, cold (empty local and shared cache) | {cold:.2f} | 1.00 |")
    print(f"| builder 2, same versions, shared cache filled by builder 1 | {shared:.2f} "
          f"| {cold / shared:.2f}x faster than cold ({found} of {gets} lookups found) |")  # fmt: skip
    print(f"| builder 2, cold again, shared cache off (control) | {control:.2f} | {cold / control:.2f} |")


if __name__ == "__main__":
    main()
