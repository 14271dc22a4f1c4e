"""Run the farm on real sdists that fail here and count how well it says why and what fixes it.

    .venv/bin/python bench/failing_sample.py [--out DIR] [--report-only]

Builds ``bench/sample-failing.txt`` with ``bench/realworld.py`` (a fresh farm, PyPI upstream),
then reads each failed build's stored log again with the current classifier and the farm's
Contents index, and compares with the true cause read by hand from each log (``TRUTH``).
Prints: named (a reason other than ``other``), right (the true reason), package suggested (where
one fixes it), package right (the first suggestion is the true fix).
"""

from __future__ import annotations

import argparse
import gzip
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from piwheels_ctl.config import apt_mirror  # noqa: E402 - after the path is set
from piwheels_ctl.db.engine import Database  # noqa: E402
from piwheels_ctl.db.models import Build, BuildStatus, Project, Version  # noqa: E402
from piwheels_ctl.failures.classify import classify  # noqa: E402
from piwheels_ctl.failures.hints import Hints  # noqa: E402

LIST = ROOT / "bench" / "sample-failing.txt"
# project -> (accepted reasons, the package that fixes it or None), read from each log by hand.
TRUTH: dict[str, tuple[tuple[str, ...], str | None]] = {
    "pycairo": (("missing-pkg-config",), "libcairo2-dev"),
    "pygobject": (("missing-pkg-config",), "libcairo2-dev"),  # its build dependency pycairo
    "mysqlclient": (("missing-pkg-config",), "libmariadb-dev-compat"),
    "adafruit-dht": (("needs-board",), None),
    "picamera": (("needs-board",), None),
    "pyyaml": (("cython3-incompatible",), None),
    "orjson": (("needs-rust",), "cargo"),
    "gssapi": (("missing-program",), "libkrb5-dev"),
    "python-ldap": (("missing-header",), "libldap-dev"),
    "pyaudio": (("missing-header",), "portaudio19-dev"),
    "systemd-python": (("missing-pkg-config",), "libsystemd-dev"),
    "dbus-python": (("missing-pkg-config",), "libdbus-1-dev"),
    "pygraphviz": (("missing-header",), "libgraphviz-dev"),
    "python-prctl": (("missing-dev-package",), "libcap-dev"),
    # needs both libpcsclite-dev and swig; the log names libpcsclite first
    "pyscard": (("missing-pkg-config", "missing-program"), "libpcsclite-dev"),
    "pyfuse3": (("missing-pkg-config",), "libfuse3-dev"),
    "python-snappy": (("missing-header",), "libsnappy-dev"),
    "mpi4py": (("setuptools-too-new",), None),
    "ruckig": (("build-backend-too-new",), None),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("list", nargs="?", type=Path, default=LIST)
    parser.add_argument("--out", type=Path, default=Path("/tmp/piwheels-failing"))
    parser.add_argument("--report-only", action="store_true", help="read the farm already in --out")
    args = parser.parse_args()
    if not args.report_only:
        realworld = [sys.executable, str(ROOT / "bench" / "realworld.py"), str(args.list)]
        subprocess.run([*realworld, "--build-timeout", "600", "--out", str(args.out)], check=True)
    data = args.out / "data"
    mirror, suite = apt_mirror() or (None, None)
    hints = Hints(data / "contents", mirror, suite, max_age_days=30, timeout=120)
    db = Database(f"sqlite:///{data / 'piwheels.db'}")
    counts = dict.fromkeys(("failed", "named", "right", "fixable", "suggested", "package right"), 0)
    print("| project | reason (detail) | true reason | first suggestion | true fix | evidence |")
    print("|---|---|---|---|---|---|")
    try:
        with db.reader() as session:
            query = (
                select(Build, Project.name, Version.version)
                .join(Version, Build.version_id == Version.id)
                .join(Project, Version.project_id == Project.id)
                .where(Build.status == BuildStatus.FAILED, Build.superseded.is_(False))
                .order_by(Project.name)
            )
            for build, name, version in session.execute(query).tuples():
                with gzip.open(data / "logs" / str(build.log_path), "rt", errors="replace") as stream:
                    text = stream.read()
                failure = classify(text)
                found = hints.suggest(failure.reason, failure.detail, "linux_x86_64", fetch=True, text=text)
                first = found[0]["package"] if found else None
                reasons, fix = TRUTH.get(name, ((), None))
                counts["failed"] += 1
                counts["named"] += failure.reason != "other"
                counts["right"] += failure.reason in reasons
                counts["fixable"] += fix is not None
                counts["suggested"] += fix is not None and first is not None
                counts["package right"] += fix is not None and first == fix
                detail = f" ({failure.detail})" if failure.detail else ""
                evidence = (failure.evidence or "")[:90].replace("|", "\\|")
                print(
                    f"| {name} {version} | {failure.reason}{detail} | {'/'.join(reasons) or '?'} |"
                    f" {first or ''} | {fix or ''} | `{evidence}` |"
                )
    finally:
        db.dispose()
    print()
    print(", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
