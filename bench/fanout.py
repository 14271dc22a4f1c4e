"""The controller's own cost per job, and how it scales with the number of SSH builders.

    .venv/bin/python bench/fanout.py [--builders 1 10 50] [--jobs 100] [--hosts 5]

Builders are real sshd hosts on loopback (several builders share one sshd); each build is a
no-op: the builders' "python" is a wrapper that runs the real agent, but answers the agent's
`pip wheel` with a tiny wheel made on the spot. So a job costs everything the farm does
around a build (claim, SSH command, agent, rsync, verify, record) and nothing of the build.
Reports jobs per second and the controller's CPU milliseconds per job (its own process and
the ssh/rsync processes it starts).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from sshd import SshHost, start_ssh_host  # noqa: E402 - the test hosts live with the tests

PIWHEELS = Path(sys.executable).with_name("piwheels-ctl")
NOOP_PIP = r"""#!/bin/sh
# A builder's python for the benchmark: the agent runs for real, `pip wheel` is a no-op.
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
    exec /usr/bin/python3 - "$@" <<'EOF'
import base64, hashlib, os, sys, zipfile
args = sys.argv[1:]
out = args[args.index("--wheel-dir") + 1]
last = args[-1]  # NAME==VERSION, or the sdist the agent fetched
if "==" in last:
    name, version = last.split("==")
else:
    name, version = os.path.basename(last)[: -len(".tar.gz")].rsplit("-", 1)
info = "%s-%s.dist-info" % (name, version)
members = {
    info + "/METADATA": "Metadata-Version: 2.1\nName: %s\nVersion: %s\n" % (name, version),
    info + "/WHEEL": "Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = ""
for member, text in members.items():
    digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
    record += "%s,sha256=%s,%d\n" % (member, digest, len(text.encode()))
members[info + "/RECORD"] = record + info + "/RECORD,,\n"
with zipfile.ZipFile("%s/%s-%s-py3-none-any.whl" % (out, name, version), "w") as whl:
    for member, text in members.items():
        whl.writestr(member, text)
EOF
fi
exec /usr/bin/python3 "$@"
"""


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([str(PIWHEELS), *args], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"piwheels-ctl {' '.join(args)}: {done.stderr[-2000:]}")
    return done.stdout


def fake_sdists(folder: Path, count: int) -> list[str]:
    """Empty sdists named p0000 … (the no-op pip never opens them)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"p{n:04d}" for n in range(count)]
    for name in names:
        with tarfile.open(folder / f"{name}-1.0.tar.gz", "w:gz"):
            pass
    return names


def measure(work: Path, hosts: list[SshHost], builders: int, jobs: int) -> dict[str, float]:
    data = work / f"data-{builders}"
    shutil.rmtree(data, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIWHEELS_")}
    env.update(PIWHEELS_DATA_DIR=str(data), PIWHEELS_UPSTREAM=str(work / "upstream"),
               PIWHEELS_LOCAL_BUILDER="false", PIWHEELS_MIN_FREE_MB="0", PIWHEELS_CCACHE="false")  # fmt: skip
    cli(env, "init")
    for n in range(builders):
        host = hosts[n % len(hosts)]
        wrapper = host.home / "noop-python"
        host.write_file(wrapper, NOOP_PIP, mode=0o755)
        cli(env, "builders", "add", f"b{n:02d}", "--host", host.address, "--port", str(host.port),
            "--user", host.user, "--key", str(host.key_file), "--python", str(wrapper),
            "--slots", "1", "--trust-host-key")  # fmt: skip
    cli(env, "add", *[f"{name}==1.0" for name in fake_sdists(work / "upstream", jobs)])
    start = time.perf_counter()
    proc = subprocess.Popen(
        [str(PIWHEELS), "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    out = proc.stdout.read().decode() if proc.stdout else ""
    if status != 0 or f"built {jobs}," not in out:
        raise SystemExit(f"run with {builders} builders: {out}")
    cpu = usage.ru_utime + usage.ru_stime
    return {"builders": builders, "jobs": jobs, "wall_s": wall, "jobs_per_s": jobs / wall,
            "controller_cpu_ms_per_job": 1000 * cpu / jobs}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builders", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--hosts", type=int, default=5, help="sshd processes the builders share")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="piwheels-fanout-"))
    work.chmod(0o755)
    hosts = [start_ssh_host(work, f"127.0.1.{n + 1}", f"pwbench{n}") for n in range(args.hosts)]
    try:
        results = [measure(work, hosts, count, args.jobs) for count in args.builders]
    finally:
        for host in hosts:
            host.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))
    print("\n| builders | jobs | wall s | jobs/s | controller CPU ms/job |\n|---|---|---|---|---|")
    for r in results:
        print(f"| {r['builders']:.0f} | {r['jobs']:.0f} | {r['wall_s']:.1f} | {r['jobs_per_s']:.1f} "
              f"| {r['controller_cpu_ms_per_job']:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
