"""Failure reasons read from build logs: real pip builds of the fixture sdists, and real excerpts."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from piwheels_ctl.failures.classify import REASONS, TAIL_LINES, Failure, classify
from piwheels_ctl.failures.rules import RULES, Rule

from sdists import pip_wheel


def _interpreters() -> list[str]:
    pypy = shutil.which("pypy3")
    return [sys.executable, pypy or "pypy3 (missing: apt-get install pypy3 pypy3-dev)"]


@pytest.mark.build
@pytest.mark.parametrize("python", _interpreters(), ids=["cpython", "pypy"])
@pytest.mark.parametrize(
    ("project", "expected"),
    [
        ("fails-header", Failure("missing-header", "no_such_header_xyz.h")),
        ("py2-only", Failure("python2-only", None)),
    ],
    ids=["fails-header", "py2-only"],
)
def test_real_pip_logs(
    python: str,
    project: str,
    expected: Failure,
    fixture_sdists: dict[str, Path],
    build_deps: Path,
    tmp_path: Path,
) -> None:
    assert Path(python).is_file(), python
    proc = pip_wheel(python, fixture_sdists[project], tmp_path / "wheels", build_deps, home=tmp_path)
    assert proc.returncode != 0
    assert classify(proc.stdout + proc.stderr) == expected


# Excerpts of real logs, as pip prints a build's output (indented by six spaces).
CARGO_MISSING = """\
      running build_rust
      error: can't find Rust compiler

      If you are using an outdated pip version, it is possible a prebuilt wheel is available for
      this package but pip is not able to install from it.
      [end of output]
"""
CARGO_FAILED = """\
      error: `cargo rustc --lib --message-format=json-render-diagnostics --manifest-path Cargo.toml \
--release -v --features pyo3/extension-module --crate-type cdylib --` failed with code 101
      [end of output]
"""
MATURIN = """\
      Cargo, the Rust package manager, is not installed or is not on PATH.
      This package requires Rust and Cargo to compile extensions.

      Checking for Rust toolchain....
"""
LD = """\
      x86_64-linux-gnu-gcc -shared build/temp.linux-x86_64-cpython-311/foo.o -lxml2 -o build/foo.so
      /usr/bin/ld: cannot find -lxml2: No such file or directory
      collect2: error: ld returned 1 exit status
      error: command '/usr/bin/x86_64-linux-gnu-gcc' failed with exit code 1
"""
LD_OLD = "      /usr/bin/ld: cannot find -lssl\n      collect2: error: ld returned 1 exit status\n"
PKG_CONFIG = """\
      Package libffi was not found in the pkg-config search path.
      Perhaps you should add the directory containing `libffi.pc'
      to the PKG_CONFIG_PATH environment variable
      No package 'libffi' found
"""
OOM_CC1 = """\
      c++: fatal error: Killed signal terminated program cc1plus
      compilation terminated.
      error: command '/usr/bin/c++' failed with exit code 1
"""
REQUIRES_PYTHON = """\
  Preparing metadata (pyproject.toml): finished with status 'done'
ERROR: Package 'pure-ok' requires a different Python: 3.11.7 not in '<3'
"""
IGNORED_VERSIONS = """\
ERROR: Ignored the following versions that require a different python version: 1.0 Requires-Python >=3.12
ERROR: Could not find a version that satisfies the requirement pure-ok==1.0 (from versions: none)
ERROR: No matching distribution found for pure-ok==1.0
"""
EXCEPT_COMMA_PYPY = """\
        File "setup.py", line 3
          except Exception, e:
                 ^
      SyntaxError: exception group must be parenthesized
"""
CLANG_HEADER = "foo.c:1:10: fatal error: 'ffi.h' file not found\n#include <ffi.h>\n"
# uv, building annoy 1.17.3 (setup_requires=['nose>=1.0']) from a folder of wheels without nose.
UV_FIND_LINKS = """\
error: Failed to build `/w/build/annoy-1.17.3.tar.gz`
  cause: Failed to resolve requirements from `build-system.requires`
  cause: No solution found when resolving: `setuptools>=40.8.0`, `nose>=1.0`
  cause: Because nose was not found in the provided package locations and you require nose>=1.0, we \
can conclude that your requirements are unsatisfiable.
"""


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        (CARGO_MISSING, Failure("needs-rust", "cargo")),
        (CARGO_FAILED, Failure("other", None)),  # Rust is there: a failing cargo is not "needs-rust"
        (MATURIN, Failure("needs-rust", "cargo")),
        (LD, Failure("missing-library", "xml2")),
        (LD_OLD, Failure("missing-library", "ssl")),
        (PKG_CONFIG, Failure("missing-pkg-config", "libffi")),
        (OOM_CC1, Failure("out-of-memory", "cc1plus")),
        ("      MemoryError\n", Failure("out-of-memory", None)),
        (
            "cc1: out of memory allocating 65536 bytes\nvirtual memory exhausted\n",
            Failure("out-of-memory", None),
        ),
        ("OSError: [Errno 12] Cannot allocate memory\n", Failure("out-of-memory", None)),
        (REQUIRES_PYTHON, Failure("unsupported-python", "<3")),
        (IGNORED_VERSIONS, Failure("unsupported-python", ">=3.12")),
        (EXCEPT_COMMA_PYPY, Failure("python2-only", None)),
        ("SyntaxError: multiple exception types must be parenthesized\n", Failure("python2-only", None)),
        ("ModuleNotFoundError: No module named 'urllib2'\n", Failure("python2-only", None)),
        (CLANG_HEADER, Failure("missing-header", "ffi.h")),
        (UV_FIND_LINKS, Failure("build-dependency-unresolved", "nose>=1.0")),
        ("error: subprocess-exited-with-error\nERROR: Failed building wheel for x\n", Failure("other", None)),
        ("", Failure("other", None)),
    ],
    ids=[
        "setuptools-rust",
        "cargo-failed",
        "maturin",
        "ld",
        "ld-old-binutils",
        "pkg-config",
        "oom-killer",
        "memory-error",
        "virtual-memory",
        "enomem",
        "requires-python",
        "ignored-versions",
        "except-comma",
        "except-comma-cpython",
        "py2-module",
        "clang-header",
        "uv-find-links",
        "unknown",
        "empty",
    ],
)
def test_log_excerpts(log: str, expected: Failure) -> None:
    failure = classify(log)
    assert failure == expected
    assert failure.reason in REASONS


def test_the_agents_findings_win_over_the_log() -> None:
    assert classify(LD, timed_out=True) == Failure("timeout", None)
    assert classify(LD, limit="memory").reason == "out-of-memory"
    assert classify(LD, limit="processes") == Failure("too-many-processes", None)
    assert classify("", timed_out=True, limit="memory").reason == "timeout"


def test_a_refused_connection_names_the_host_when_the_log_says_nothing_known() -> None:
    refused = ["pypi.invalid:443: cannot resolve the name", "10.0.0.1:5432: refused"]
    assert classify("ERROR: whatever\n", network=refused) == Failure("needs-network", refused[0])
    assert classify(LD, network=refused).reason == "missing-library"


def test_first_error_of_the_tail_wins() -> None:
    header = "foo.c:2:10: fatal error: foo.h: No such file or directory\n"
    assert classify(header + LD) == Failure("missing-header", "foo.h")
    assert classify(LD + header) == Failure("missing-library", "xml2")


def test_the_tail_wins_over_probes_at_the_start() -> None:
    probe = "conftest.c:1:10: fatal error: optional.h: No such file or directory\n"
    noise = "      copying src/module.py -> build/lib\n" * TAIL_LINES
    assert classify(probe + noise + LD) == Failure("missing-library", "xml2")
    # With nothing known in the tail, an error further up still counts.
    assert classify(probe + noise) == Failure("missing-header", "optional.h")


@pytest.mark.parametrize("rule", RULES, ids=[f"{r.reason}:{r.example[:40]}" for r in RULES])
def test_every_rule_matches_its_example(rule: Rule) -> None:
    assert rule.reason in REASONS, f"{rule.reason!r} is not one of REASONS"
    failure = classify(rule.example + "\n")
    expected = rule.expect if rule.expect is not None else rule.detail  # the group's, or the row's
    assert (failure.reason, failure.detail) == (rule.reason, expected), (
        f"the example {rule.example!r} of {rule.pattern!r} gave {failure}"
    )
    assert failure.evidence is not None and failure.evidence in rule.example, failure.evidence
    # The same line as pip prints a build's output (indented) gives the same failure.
    indented = "".join(f"      {line}\n" for line in rule.example.splitlines())
    assert classify(indented) == failure, f"{indented!r} gave {classify(indented)}"


# Reasons only the agent or the controller decides, never a log line.
NOT_FROM_LOGS = {
    "timeout",
    "too-many-processes",
    "download-failed",
    "invalid-wheel",
    "builder-fault",
    "other",
}


def test_every_reason_a_log_can_show_has_a_rule() -> None:
    ruled = {rule.reason for rule in RULES}
    assert ruled == set(REASONS) - NOT_FROM_LOGS, f"without a rule: {set(REASONS) - NOT_FROM_LOGS - ruled}"


@pytest.mark.parametrize(
    ("line", "program"),
    [
        ("/bin/sh: 1: krb5-config: not found", "krb5-config"),
        ("sh: curl-config: command not found", "curl-config"),
        ("error: command '/usr/bin/swig' failed: No such file or directory", "swig"),
        ("FileNotFoundError: [Errno 2] No such file or directory: 'cmake'", "cmake"),
        ("/bin/sh: 1: mpicc: not found", "mpicc"),
        (
            "ExecutableNotFound: failed to execute 'dot', make sure the Graphviz executables are on PATH",
            "dot",
        ),
    ],
)
def test_missing_programs_are_named(line: str, program: str) -> None:
    assert classify(line + "\n") == Failure("missing-program", program)


def test_a_missing_data_file_is_not_a_missing_program() -> None:
    failure = classify("FileNotFoundError: [Errno 2] No such file or directory: 'README.md'\n")
    assert failure.reason == "other", failure


def test_the_earliest_fatal_line_wins_over_the_last_message() -> None:
    # A download that failed in setup.py, then the Rust step that needed it: the cause is the
    # network (a machine that has Rust once got "needs-rust" for this).
    log = (
        "      urllib.error.URLError: <urlopen error [Errno -3] Temporary failure in name resolution>\n"
        "      error: can't find Rust compiler\n"
    )
    failure = classify(log, network=["static.example.invalid:443: cannot resolve the name"])
    assert failure == Failure("needs-network", "static.example.invalid:443: cannot resolve the name")
    assert failure.evidence is not None and "Temporary failure in name resolution" in failure.evidence


def test_evidence_of_the_agents_findings() -> None:
    assert classify("", timed_out=True).evidence == "the agent ended the build at its time limit"
    assert "abc" in str(classify("", download="sha256 abc differs").evidence)
    assert classify("", network=["h:443: refused"]).evidence == "the sandbox refused h:443: refused"


# Real logs of issue 24: the farm's own builds of real sdists (bench/failing_sample.py), cargo
# 1.95 itself (a crate with rust-version 1.999; one without a network), and puccinialin (what
# maturin and setuptools-rust projects use to download Rust) without a network.
ORJSON_MATURIN = """\
Running `maturin pep517 build-wheel -i /w/.tmp7ub0cP/bin/python --manylinux=off --strip=on`
💥 maturin failed
  Caused by: Cargo metadata failed. Do you have cargo in your PATH?
  Caused by: No such file or directory (os error 2)
Error: command ['maturin', 'pep517', 'build-wheel'] returned non-zero exit status 1
"""
CARGO_TOO_OLD = """\
error: rustc 1.95.0 is not supported by the following package:
  old@0.1.0 requires rustc 1.999

"""
CARGO_OFFLINE = """\
    Updating crates.example index
warning: spurious network error (3 tries remaining): [6] Could not resolve hostname (Could not \
resolve host: index.crates.example)
error: failed to get `libc` as a dependency of package `net v0.1.0 (/tmp/h24a/rust/net)`

Caused by:
  download of config.json failed

Caused by:
  failed to download from `https://index.crates.example/config.json`
"""
RUST_DOWNLOAD = """\
Rust not found, installing into a temporary directory
Python reports SOABI: cpython-311-x86_64-linux-gnu
Computed rustc target triple: x86_64-unknown-linux-gnu
Downloading rustup-init from https://static.rust-lang.org/rustup/dist/x86_64-unknown-linux-gnu/rustup-init
Traceback (most recent call last):
httpx.ConnectError: [Errno -3] Temporary failure in name resolution
"""
MYSQLCLIENT = """\
Exception: Can not find valid pkg-config name.
Specify MYSQLCLIENT_CFLAGS and MYSQLCLIENT_LDFLAGS env vars manually
Trying pkg-config --exists mysqlclient
Command 'pkg-config --exists mysqlclient' returned non-zero exit status 1.
Trying pkg-config --exists mariadb
Command 'pkg-config --exists mariadb' returned non-zero exit status 1.
"""
ADAFRUIT_DHT = """\
writing manifest file 'Adafruit_DHT.egg-info/SOURCES.txt'
Could not detect if running on the Raspberry Pi or Beaglebone Black.  If this failure is unexpected, \
you can run again with --force-pi or --force-bbb parameter to force using the Raspberry Pi or \
Beaglebone Black respectively.
error: Failed to build `/w/build/Adafruit_DHT-1.4.0.tar.gz`
"""


ISSUE_24 = dict(
    zip(
        [
            "maturin-no-cargo",
            "cargo-too-old",
            "setuptools-rust-too-old",
            "crate-download-refused",
            "rust-download",
            "mysqlclient",
            "adafruit-dht",
            "picamera",
            "pyyaml-5.4.1",
            "python-prctl",
            "mpi4py-dry-run",
            "ruckig-skbuild",
            "pyzmq-warning",
        ],
        [
            (ORJSON_MATURIN, Failure("needs-rust", "cargo")),
            (CARGO_TOO_OLD, Failure("rust-too-old", "rustc >=1.999 asked, 1.95.0 found")),
            (
                "      error: Rust 1.63.0 does not match extension requirement >=1.64.0\n",
                Failure("rust-too-old", "rustc >=1.64.0 asked, 1.63.0 found"),
            ),
            (CARGO_OFFLINE, Failure("needs-network", "index.crates.example")),
            (RUST_DOWNLOAD, Failure("needs-rust", "cargo")),
            (MYSQLCLIENT, Failure("missing-pkg-config", "mysqlclient")),
            (ADAFRUIT_DHT, Failure("needs-board", "Raspberry Pi or Beaglebone Black")),
            (
                "ValueError: Unable to determine if this system is a Raspberry Pi\n",
                Failure("needs-board", "Raspberry Pi"),
            ),
            (
                "AttributeError: 'build_ext' object has no attribute 'cython_sources'\n",
                Failure("cython3-incompatible", None),
            ),
            (
                "You need to install libcap development headers to build this module\n",
                Failure("missing-dev-package", "libcap"),
            ),
            (
                "TypeError: new_compiler() got an unexpected keyword argument 'dry_run'\n",
                Failure("setuptools-too-new", "dry_run"),
            ),
            (
                "ERROR: Use build.targets instead of cmake.targets for scikit-build-core >= 0.10\n",
                Failure("build-backend-too-new", "scikit-build-core: cmake.targets"),
            ),
            # pyzmq prints it as a warning and fails for another reason
            (
                "WARNING: Use build.targets instead of cmake.targets for scikit-build-core >= 0.10\n",
                Failure("other", None),
            ),
        ],
        strict=True,
    )
)


@pytest.mark.parametrize("case", list(ISSUE_24))
def test_real_logs_of_issue_24(case: str) -> None:
    log, expected = ISSUE_24[case]
    failure = classify(log)
    assert failure == expected, f"{failure} (evidence {failure.evidence!r})"


def test_a_projects_own_rust_download_is_named_by_the_toolchain_with_the_download_as_evidence() -> None:
    failure = classify(RUST_DOWNLOAD, network=["static.rust-lang.org:443: cannot resolve the name"])
    assert failure == Failure("needs-rust", "cargo"), failure
    evidence = str(failure.evidence)
    assert "Downloading rustup-init from https://static.rust-lang.org/" in evidence, evidence
    assert "Temporary failure in name resolution" in evidence, evidence


def test_the_evidence_of_a_long_line_is_a_window_around_the_match() -> None:
    # make prints one compile line of thousands of characters; the error is at its end.
    flags = " ".join(f"-I/usr/include/dep{i}" for i in range(160))
    error = "src/module.c:12:10: fatal error: cairo.h: No such file or directory"
    line = f"gcc -pthread {flags} -c src/module.c -o build/module.o {error}"
    assert len(line) > 3000
    failure = classify(f"make[2]: Entering directory '/w'\n{line}\ncompilation terminated.\n")
    evidence = str(failure.evidence)
    assert failure.detail == "cairo.h", failure
    assert "fatal error: cairo.h: No such file or directory" in evidence, evidence
    assert len(evidence) <= 502 and evidence.startswith("…"), (len(evidence), evidence[:40])
    # A match in the middle of a long line keeps both sides, marked as cut.
    middle = classify("x" * 2000 + " /usr/bin/ld: cannot find -lxml2 " + "y" * 2000 + "\n")
    assert "cannot find -lxml2" in str(middle.evidence) and str(middle.evidence).endswith("…"), middle
