"""How fast package hints are: build the by-file-name cache of a Contents index once, then time lookups.

    .venv/bin/python bench/hints_lookup.py MIRROR_URL SUITE [CACHE_DIR]

MIRROR_URL is a Debian mirror (or a folder served over HTTP holding dists/SUITE/main/Contents-*.gz).
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from piwheels_ctl.failures.hints import Hints

cache = Path(sys.argv[3]) if len(sys.argv) > 3 else Path("/tmp/piwheels-hints-bench")
h = Hints(cache, sys.argv[1], sys.argv[2], max_age_days=7, timeout=120)
t = time.perf_counter()
idx = h.index("linux_x86_64")
assert idx is not None, "no Debian architecture"
if not idx.fresh():
    print(
        "rows",
        idx.refresh(),
        "refresh s",
        round(time.perf_counter() - t, 1),
        "size MB",
        idx.path.stat().st_size / 1e6,
    )
cases = [
    ("missing-header", "cairo.h", "gcc -I/usr/include/python3.11 -c x.c"),
    ("missing-header", "gtk/gtk.h", "gcc -I/usr/include/gtk-3.0 -I/usr/include/glib-2.0 -c x.c"),
    ("missing-header", "libxml/parser.h", "gcc -c x.c"),
    ("missing-header", "Python.h", "gcc -I/usr/include/python3.11 -c"),
    ("missing-header", "mysql.h", ""),
    ("missing-header", "sasl.h", ""),
    ("missing-header", "winscard.h", ""),
    ("missing-library", "cairo", ""),
    ("missing-pkg-config", "mysqlclient", ""),
    ("missing-pkg-config", "cairo", ""),
    ("missing-program", "curl-config", ""),
    ("missing-program", "krb5-config", ""),
    ("missing-program", "mpicc", ""),
    ("missing-dev-package", "libcap", ""),
    ("rust-too-old", "rustc >=1.64 asked, 1.63.0 found", ""),
    ("needs-rust", "cargo", ""),
]
times = []
for reason, detail, log in cases:
    t = time.perf_counter()
    s = h.suggest(reason, detail, "linux_x86_64", fetch=False, text=log) or []
    times.append(time.perf_counter() - t)
    print(f"{reason} {detail}: " + " | ".join(f"{x['package']} ({x['why']})" for x in s))
times.sort()
print(
    "lookups",
    len(times),
    "median ms",
    round(times[len(times) // 2] * 1000, 2),
    "max ms",
    round(times[-1] * 1000, 2),
)
