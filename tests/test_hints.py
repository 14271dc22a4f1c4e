"""Suggested packages from a Debian Contents index: a fixture index served over real HTTP on
loopback, and one real lookup on the Debian mirror of this machine's apt sources (opt-in)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from debmirror import debian_mirror

from piwheels_ctl.config import Settings, apt_mirror
from piwheels_ctl.failures.classify import classify
from piwheels_ctl.failures.hints import ContentsIndex, Hints, HintsError, contents_key

# Lines as the Debian mirror's Contents-amd64.gz has them (bookworm), and some it has to skip;
# the first block taken as is from the real bookworm Contents-amd64.gz (issue 24).
CONTENTS_AMD64 = """\
usr/include/PCSC/winscard.h                             libdevel/libpcsclite-dev
usr/include/cairo/cairo.h                               libdevel/libcairo2-dev
usr/include/cvm/sasl.h                                  libdevel/libcvm1-dev
usr/include/gtk-2.0/gtk/gtk.h                           oldlibs/libgtk2.0-dev
usr/include/gtk-3.0/gtk/gtk.h                           libdevel/libgtk-3-dev
usr/include/gtk-4.0/gtk/gtk.h                           libdevel/libgtk-4-dev
usr/include/mariadb/mysql.h                             libdevel/libmariadb-dev
usr/include/python3.11/Python.h                         libdevel/libpython3.11-dev
usr/include/sasl/sasl.h                                 libdevel/libsasl2-dev
usr/include/tbox/database/impl/mysql.h                  libdevel/libtbox-dev
usr/include/wine/wine/windows/winscard.h                libdevel/libwine-dev
usr/lib/x86_64-linux-gnu/libcairo.so                    libdevel/libcairo2-dev
usr/lib/x86_64-linux-gnu/libcairo.so.2                  libs/libcairo2
usr/lib/x86_64-linux-gnu/pkgconfig/cairo.pc             libdevel/libcairo2-dev
usr/lib/x86_64-linux-gnu/pkgconfig/gtk+-3.0.pc          libdevel/libgtk-3-dev
usr/lib/x86_64-linux-gnu/pkgconfig/libcap.pc            libdevel/libcap-dev
usr/lib/x86_64-linux-gnu/pkgconfig/libpcsclite.pc       libdevel/libpcsclite-dev
usr/lib/x86_64-linux-gnu/pkgconfig/libsasl2.pc          libdevel/libsasl2-dev
usr/lib/x86_64-linux-gnu/pkgconfig/mysqlclient.pc       libdevel/libmariadb-dev-compat
usr/bin/cargo                                           rust/cargo,devel/cargo-web
usr/bin/curl-config       libdevel/libcurl4-gnutls-dev,libdevel/libcurl4-openssl-dev
usr/bin/dot                                             graphics/graphviz
usr/bin/mpicc.openmpi                                   libdevel/libopenmpi-dev
usr/bin/pg_config                                       libdevel/libpq-dev
usr/include/iodbc/sql.h                                 libdevel/libiodbc2-dev
usr/include/sql.h                                       libdevel/unixodbc-dev
usr/include/libxml2/libxml/parser.h                     libdevel/libxml2-dev
usr/include/x86_64-linux-gnu/ffi.h                      libdevel/libffi-dev
usr/lib/x86_64-linux-gnu/libxml2.so                     libdevel/libxml2-dev
usr/lib/x86_64-linux-gnu/libxml2.so.2                   libs/libxml2
usr/lib/x86_64-linux-gnu/pkgconfig/libffi.pc            libdevel/libffi-dev
usr/share/doc/graphviz/copyright                        graphics/graphviz
usr/share/man/man1/dot.1.gz                             graphics/graphviz
a line without a package
"""
CONTENTS_ALL = """\
usr/include/eigen3/Eigen/Core                           libdevel/libeigen3-dev
usr/include/rapidjson/document.h                        libdevel/rapidjson-dev
usr/share/pkgconfig/eigen3.pc                           libdevel/libeigen3-dev
"""


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """A Debian mirror on 127.0.0.1 with the fixture Contents files; its URL and the paths asked."""
    with debian_mirror(tmp_path / "mirror", CONTENTS_AMD64, CONTENTS_ALL) as served:
        yield served


def _hints(tmp_path: Path, url: str, suite: str = "bookworm") -> Hints:
    return Hints(tmp_path / "contents", url, suite, max_age_days=7, timeout=10)


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ("usr/include/libxml2/libxml/parser.h", ("header", "parser.h")),  # found by its base name
        ("usr/include/x86_64-linux-gnu/ffi.h", ("header", "ffi.h")),
        ("usr/lib/arm-linux-gnueabihf/libssl.so", ("library", "ssl")),
        ("usr/lib/x86_64-linux-gnu/libxml2.so.2", None),  # the runtime library: not what -l needs
        ("usr/share/pkgconfig/eigen3.pc", ("pkgconfig", "eigen3")),
        ("usr/lib/aarch64-linux-gnu/pkgconfig/libffi.pc", ("pkgconfig", "libffi")),
        ("usr/sbin/krb5kdc", ("program", "krb5kdc")),
        ("usr/bin/X11/xterm", None),
        ("usr/share/man/man1/dot.1.gz", None),
    ],
)
def test_which_paths_are_kept(path: str, key: tuple[str, str] | None) -> None:
    assert contents_key(path) == key


@pytest.mark.parametrize(
    ("log_line", "packages"),
    [
        # the literal path first, then the one in a subfolder
        ("foo.c:2:10: fatal error: sql.h: No such file or directory", ["unixodbc-dev", "libiodbc2-dev"]),
        ("foo.c:2:10: fatal error: ffi.h: No such file or directory", ["libffi-dev"]),
        ("foo.c:1:10: fatal error: rapidjson/document.h: No such file or directory", ["rapidjson-dev"]),
        ("/usr/bin/ld: cannot find -lxml2: No such file or directory", ["libxml2-dev"]),
        ("No package 'libffi' found", ["libffi-dev"]),
        ("Package eigen3 was not found in the pkg-config search path.", ["libeigen3-dev"]),
        # Debian's default of the alternatives first
        ("/bin/sh: 1: curl-config: not found", ["libcurl4-openssl-dev", "libcurl4-gnutls-dev"]),
        ("Error: pg_config executable not found.", ["libpq-dev"]),
        ("ExecutableNotFound: failed to execute PosixPath('dot'), make sure", ["graphviz"]),
        ("/bin/sh: 1: mpicc: not found", ["libopenmpi-dev"]),  # an alternative: mpicc.openmpi
        ("foo.c:2:10: fatal error: nothere.h: No such file or directory", []),
    ],
)
def test_suggested_packages_from_a_served_contents_index(
    tmp_path: Path, mirror: tuple[str, list[str]], log_line: str, packages: list[str]
) -> None:
    url, _asked = mirror
    failure = classify(log_line + "\n")
    found = _hints(tmp_path, url).packages(failure.reason, failure.detail, "linux_x86_64", fetch=True)
    assert found == packages, f"{failure}: {found}"


@pytest.mark.parametrize(
    ("log", "packages", "why"),
    [
        # The compiler prints the #include's name; the header lives in a subfolder.
        ("x.c:1:10: fatal error: cairo.h: No such file or directory", ["libcairo2-dev"], "cairo/"),
        ("x.c:1:10: fatal error: libxml/parser.h: No such file or directory", ["libxml2-dev"], "libxml2/"),
        (
            "x.c:1:10: fatal error: winscard.h: No such file or directory",
            ["libpcsclite-dev", "libwine-dev"],
            "PCSC/",
        ),
        # one folder down before three; a folder named after the header first
        (
            "x.c:1:10: fatal error: mysql.h: No such file or directory",
            ["libmariadb-dev", "libtbox-dev"],
            "mariadb/",
        ),
        (
            "x.c:1:10: fatal error: sasl.h: No such file or directory",
            ["libsasl2-dev", "libcvm1-dev"],
            "sasl/",
        ),
        # the log's -I folder picks one of three GTKs
        (
            "gcc -I/usr/include/gtk-3.0 -I/usr/include/glib-2.0 -c x.c\n"
            "x.c:1:10: fatal error: gtk/gtk.h: No such file or directory",
            ["libgtk-3-dev"],
            "the log passes -I/usr/include/gtk-3.0",
        ),
        # ... and so does its .pc file
        (
            "running: pkg-config --cflags gtk+-3.0\n"
            "x.c:1:10: fatal error: gtk/gtk.h: No such file or directory",
            ["libgtk-3-dev"],
            "the log names its gtk+-3.0.pc",
        ),
        # a library in any multiarch folder; the -dev package, not the runtime library
        ("/usr/bin/ld: cannot find -lcairo: No such file or directory", ["libcairo2-dev"], "libcairo.so"),
        (
            "Command 'pkg-config --exists mysqlclient' returned non-zero exit status 1.",
            ["libmariadb-dev-compat"],
            "mysqlclient.pc",
        ),
        ("You need to install libcap development headers to build this module", ["libcap-dev"], "libcap.pc"),
        ("/bin/sh: 1: cargo: not found", ["cargo", "cargo-web"], "/usr/bin/cargo"),
        # Debian's cargo is the one too old: its newer build, and rustup
        ("error: Rust 1.63.0 does not match extension requirement >=1.64.0", ["cargo-web"], "rustup"),
    ],
    ids=[
        "cairo",
        "libxml2",
        "pcsc",
        "mysql",
        "sasl",
        "gtk-by-I",
        "gtk-by-pc",
        "lib",
        "mysqlclient-pc",
        "libcap-words",
        "cargo",
        "rust-too-old",
    ],
)
def test_packages_by_what_the_compiler_looked_for(
    tmp_path: Path, mirror: tuple[str, list[str]], log: str, packages: list[str], why: str
) -> None:
    url, _asked = mirror
    failure = classify(log + "\n")
    found = _hints(tmp_path, url).suggest(
        failure.reason, failure.detail, "linux_x86_64", fetch=True, text=log
    )
    assert found is not None, failure
    names = [s["package"] for s in found]
    assert names[: len(packages)] == packages, f"{failure}: {found}"
    assert why in found[0]["why"], f"why {found[0]['package']} is listed: {found[0]['why']!r}"


def test_the_index_is_fetched_once_and_kept_a_week(tmp_path: Path, mirror: tuple[str, list[str]]) -> None:
    url, asked = mirror
    hints = _hints(tmp_path, url)
    assert hints.packages("missing-header", "sql.h", "linux_x86_64", fetch=False) is None, "not fetched yet"
    assert hints.packages("missing-header", "sql.h", "linux_x86_64", fetch=True) == [
        "unixodbc-dev",
        "libiodbc2-dev",
    ]
    fetched = list(asked)
    assert fetched == [
        "/dists/bookworm/main/Contents-amd64.gz",
        "/dists/bookworm/main/Contents-all.gz",
    ], fetched
    # A second controller process, a day later: the cache answers.
    again = _hints(tmp_path, url)
    assert again.packages("missing-program", "dot", "linux_x86_64", fetch=True) == ["graphviz"]
    assert again.packages("missing-program", "dot", "linux_x86_64", fetch=False) == ["graphviz"]
    assert asked == fetched, asked
    # Eight days on, it is fetched again.
    cache = tmp_path / "contents" / "contents-bookworm-amd64.sqlite"
    old = time.time() - 8 * 86400
    os.utime(cache, (old, old))
    assert _hints(tmp_path, url).packages("missing-program", "dot", "linux_x86_64", fetch=True) == [
        "graphviz"
    ]
    assert len(asked) == 4, asked


def test_no_hint_without_a_detail_a_mirror_or_a_debian_arch(
    tmp_path: Path, mirror: tuple[str, list[str]]
) -> None:
    url, asked = mirror
    assert _hints(tmp_path, url).packages("missing-header", None, "linux_x86_64", fetch=True) is None
    assert _hints(tmp_path, url).packages("timeout", None, "linux_x86_64", fetch=True) is None
    assert _hints(tmp_path, url).packages("missing-header", "a.h", "macosx_11_0_arm64", fetch=True) is None
    off = Hints(tmp_path / "contents", None, None, max_age_days=7, timeout=10)
    assert off.packages("missing-header", "sql.h", "linux_x86_64", fetch=True) is None
    assert asked == [], asked


def test_a_missing_index_is_one_error_naming_the_url(tmp_path: Path, mirror: tuple[str, list[str]]) -> None:
    url, _asked = mirror
    with pytest.raises(HintsError, match=r"dists/trixie/main/Contents-amd64\.gz: HTTP 404"):
        _hints(tmp_path, url, "trixie").packages("missing-header", "sql.h", "linux_x86_64", fetch=True)
    assert not (tmp_path / "contents" / "contents-trixie-amd64.sqlite").exists()
    with pytest.raises(HintsError, match="not a suite"):
        ContentsIndex(tmp_path, url, "../etc", "amd64", max_age_days=7, timeout=10)


def test_apt_sources_in_both_formats(tmp_path: Path) -> None:
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list").write_text(
        "# comment\ndeb-src http://mirror.invalid/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.invalid/debian bookworm-updates main\n"
    )
    (apt / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://other.invalid/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main contrib\n\nTypes: deb\nURIs: http://sec.invalid/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n"
    )
    # The release's own suite wins over -updates, whichever file comes first.
    assert apt_mirror(apt) == ("http://other.invalid/debian/", "bookworm")
    (apt / "sources.list.d" / "debian.sources").unlink()
    assert apt_mirror(apt) == ("http://mirror.invalid/debian/", "bookworm-updates")
    assert apt_mirror(tmp_path / "nothing") is None


def test_the_mirror_setting() -> None:
    assert Settings(debian_mirror="").debian_source is None
    assert Settings(debian_mirror="http://m.invalid/debian/", debian_suite="trixie").debian_source == (
        "http://m.invalid/debian/",
        "trixie",
    )
    with pytest.raises(ValueError, match="http"):
        Settings(debian_mirror="ftp://m.invalid/debian")


def _real_mirror() -> tuple[str, str]:
    if os.environ.get("PIWHEELS_TEST_DEBIAN_MIRROR") != "1":
        pytest.skip("set PIWHEELS_TEST_DEBIAN_MIRROR=1 to fetch the real Contents index (about 45 MB)")
    source = apt_mirror()
    if source is None:
        pytest.skip("/etc/apt sources name no http(s) Debian mirror with 'main'")
    url, suite = source
    try:
        requests.head(f"{url}dists/{suite}/Release", timeout=10).raise_for_status()
    except requests.RequestException as exc:
        pytest.skip(f"the Debian mirror of the apt sources is not reachable: {exc}")
    return url, suite


def test_real_contents_index_of_this_machines_release(tmp_path: Path) -> None:
    url, suite = _real_mirror()
    hints = Hints(tmp_path, url, suite, max_age_days=7, timeout=120)
    expected = {
        ("missing-header", "sql.h"): "unixodbc-dev",
        ("missing-program", "curl-config"): "libcurl4-openssl-dev",
        ("missing-program", "dot"): "graphviz",
        ("missing-library", "xml2"): "libxml2-dev",
        ("missing-pkg-config", "libffi"): "libffi-dev",
        ("missing-program", "pg_config"): "libpq-dev",
        ("needs-rust", "cargo"): "cargo",
        ("missing-header", "cairo.h"): "libcairo2-dev",
        ("missing-header", "libxml/parser.h"): "libxml2-dev",
        ("missing-header", "gtk/gtk.h"): "libgtk-3-dev",
        ("missing-header", "winscard.h"): "libpcsclite-dev",
        ("missing-pkg-config", "mysqlclient"): "libmariadb-dev-compat",
        ("missing-dev-package", "libcap"): "libcap-dev",
        ("rust-too-old", "rustc >=1.64 asked, 1.63.0 found"): "cargo-web",
    }
    for (reason, detail), package in expected.items():
        found = hints.packages(reason, detail, "linux_x86_64", fetch=True)
        assert found is not None and package in found, f"{reason} {detail}: {found}"
