"""The table of failure rules: one row per way a build log says why it failed.

To add a rule, add a row: the reason (one of ``classifier.REASONS``), a regular expression
(multi-line mode: ``^`` is a line's start), where the detail comes from, and a real log line it
must match with the detail that line gives. The tests check every row against its example, so a
row whose pattern does not match its own example cannot go in.

The detail is the pattern's group named ``detail`` if it has one, else the row's fixed
``detail`` (or none). When two rules match at the same place of a log, the earlier row wins:
specific rows (``cargo: not found`` is Rust) come before general ones (any ``X: not found``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    """One row: ``reason`` when ``pattern`` matches; ``example`` is a log line it must match,
    whose detail is ``expect``."""

    reason: str
    pattern: str
    example: str
    expect: str | None = None
    # A fixed detail, for patterns without a ``detail`` group; with "{group}" in it, made of
    # the pattern's groups ("rustc {asked} asked, {found} found").
    detail: str | None = None


# A program name as a shell or Python's subprocess reports it missing: no path, no dots
# (so "README.md" in "No such file or directory: 'README.md'" is not taken for a program).
_PROGRAM = r"[A-Za-z][\w+-]*"

RULES: tuple[Rule, ...] = (
    # --- a compiled module of the wheel did not load (the agent's load check, in the loader's
    # words after the member's name): first what it lacked, a symbol or a library.
    Rule(
        "import-failed",
        r"^[ \t]*\[piwheels\] import-failed: .*\bundefined symbol: (?P<detail>[^\s,]+)",
        "[piwheels] import-failed: numpy/core/_multiarray_umath.cpython-37m-arm-linux-gnueabihf.so:"
        " undefined symbol: cblas_sgemm",
        "cblas_sgemm",
    ),
    Rule(
        "import-failed",
        r"^[ \t]*\[piwheels\] import-failed: .*?(?P<detail>[^\s/:]+): cannot open shared object file",
        "[piwheels] import-failed: cryptography/hazmat/bindings/_rust.abi3.so: libssl.so.1.1: cannot"
        " open shared object file: No such file or directory",
        "libssl.so.1.1",
    ),
    Rule(
        "import-failed",
        r"^[ \t]*\[piwheels\] import-failed: ",
        "[piwheels] import-failed: x.so: wrong ELF class: ELFCLASS64",
    ),
    # --- missing header: gcc, then clang (which quotes the name).
    Rule(
        "missing-header",
        r"fatal error: (?P<detail>[^\s:']+): No such file or directory",
        "foo.c:2:10: fatal error: sql.h: No such file or directory",
        "sql.h",
    ),
    Rule(
        "missing-header",
        r"fatal error: '(?P<detail>[^']+)' file not found",
        "foo.c:1:10: fatal error: 'ffi.h' file not found",
        "ffi.h",
    ),
    # --- missing library at link time: GNU ld (binutils >= 2.39 appends ": No such file ..."),
    # then the macOS/lld wording.
    Rule(
        "missing-library",
        r"\bld(?:\.\w+)?: cannot find -l(?P<detail>[^\s:]+)",
        "/usr/bin/ld: cannot find -lxml2: No such file or directory",
        "xml2",
    ),
    Rule(
        "missing-library",
        r"\bld(?:\.\w+)?: library not found for -l(?P<detail>[^\s:]+)",
        "ld: library not found for -lssl",
        "ssl",
    ),
    # --- missing pkg-config module: pkg-config's own words, and meson's.
    Rule(
        "missing-pkg-config",
        r"\bPackage (?P<detail>[\w.+-]+) was not found in the pkg-config search path",
        "Package libffi was not found in the pkg-config search path.",
        "libffi",
    ),
    Rule(
        "missing-pkg-config",
        r"\bNo package '(?P<detail>[^']+)' found",
        "No package 'dbus-1' found",
        "dbus-1",
    ),
    Rule(
        "missing-pkg-config",
        r"Dependency \"?(?P<detail>[\w.+-]+)\"? not found, tried pkgconfig",
        'meson.build:31:9: ERROR: Dependency "cairo" not found, tried pkgconfig',
        "cairo",
    ),
    Rule(  # meson 1.x, as meson-python builds print it (pycairo, dbus-python)
        "missing-pkg-config",
        r"Dependency \"?(?P<detail>[\w.+-]+)\"? not found \(tried pkg-?config",
        '../cairo/meson.build:31:12: ERROR: Dependency "cairo" not found (tried pkg-config and cmake)',
        "cairo",
    ),
    # --- Rust (issue 24): no Rust at all, a Rust too old, a crate download refused. A cargo
    # or maturin call that failed for another reason is none of these (rows below name the cause).
    Rule("needs-rust", r"can't find Rust compiler", "      error: can't find Rust compiler", detail="cargo"),
    Rule(
        "needs-rust",
        r"Cargo, the Rust package manager, is not installed",
        "Cargo, the Rust package manager, is not installed or is not on PATH.",
        detail="cargo",
    ),
    Rule(
        "needs-rust",
        r"No such file or directory: '(?P<detail>cargo|rustc)'",
        "FileNotFoundError: [Errno 2] No such file or directory: 'cargo'",
        "cargo",
    ),
    Rule(
        "needs-rust",
        r"\b(?P<detail>cargo|rustc): (?:command )?not found",
        "/bin/sh: 1: rustc: not found",
        "rustc",
    ),
    Rule(  # maturin without cargo on PATH (orjson 3.6.0)
        "needs-rust",
        r"Cargo metadata failed\. Do you have cargo in your PATH\?",
        "  Caused by: Cargo metadata failed. Do you have cargo in your PATH?",
        detail="cargo",
    ),
    Rule(  # setuptools-rust's rust_version
        "rust-too-old",
        r"Rust (?P<found>\d[\w.-]*) does not match extension requirement (?P<asked>\S+)",
        "error: Rust 1.63.0 does not match extension requirement >=1.64.0",
        "rustc >=1.64.0 asked, 1.63.0 found",
        detail="rustc {asked} asked, {found} found",
    ),
    Rule(  # cargo up to 1.7x: a package's rust-version
        "rust-too-old",
        r"cannot be built because it requires rustc (?P<asked>\S+) or newer, while the currently active rustc"
        r" version is (?P<found>\d[\w.-]*)",
        "error: package `pyo3 v0.22.0` cannot be built because it requires rustc 1.63 or newer, while the"
        " currently active rustc version is 1.61.0",
        "rustc >=1.63 asked, 1.61.0 found",
        detail="rustc >={asked} asked, {found} found",
    ),
    Rule(  # newer cargo (cargo 1.95.0, rust-version = "1.999")
        "rust-too-old",
        r"rustc (?P<found>\d[\w.-]*) is not supported by the following package:\s*\n\s*\S+ requires rustc"
        r" (?P<asked>\S+)",
        "error: rustc 1.95.0 is not supported by the following package:\n  old@0.1.0 requires rustc 1.999",
        "rustc >=1.999 asked, 1.95.0 found",
        detail="rustc >={asked} asked, {found} found",
    ),
    Rule(  # a Cargo.toml of a newer edition than this cargo knows (Debian's cargo and edition 2024)
        "rust-too-old",
        r"feature `(?P<detail>edition\d+)` is required",
        "  feature `edition2024` is required",
        "edition2024",
    ),
    # A crate or index download the build network refused (cargo's words): the host it wanted.
    Rule(
        "needs-network",
        r"failed to (?:download from|get) `?https?://(?P<detail>[\w.-]+)",
        "  failed to download from `https://index.crates.example/config.json`",
        "index.crates.example",
    ),
    Rule(
        "needs-network",
        r"Failed to connect to (?P<detail>[\w.-]+) port \d+",
        "warning: spurious network error (3 tries remaining): [7] Could not connect to server (Failed to"
        " connect to 127.0.0.1 port 9 after 0 ms: Could not connect to server)",
        "127.0.0.1",
    ),
    # --- needs Fortran: numpy.distutils, meson, and the compiler's absence.
    Rule(
        "needs-fortran",
        r"has Fortran sources but no Fortran compiler found",
        "error: library dfftpack has Fortran sources but no Fortran compiler found",
        detail="gfortran",
    ),
    Rule(
        "needs-fortran",
        r"Unknown compiler\(s\): \[\['gfortran'\]",
        "meson.build:1:0: ERROR: Unknown compiler(s): [['gfortran'], ['flang-new'], ['flang']]",
        detail="gfortran",
    ),
    Rule(
        "needs-fortran",
        r"\b(?P<detail>gfortran|f77|f95): (?:command )?not found",
        "/bin/sh: 1: gfortran: not found",
        "gfortran",
    ),
    Rule(
        "needs-fortran",
        r"No such file or directory: '(?P<detail>gfortran|f77|f95)'",
        "FileNotFoundError: [Errno 2] No such file or directory: 'gfortran'",
        "gfortran",
    ),
    # --- needs CUDA: PyTorch's extension helpers and the CUDA compiler's absence.
    Rule(
        "needs-cuda",
        r"CUDA_HOME environment variable is not set",
        "OSError: CUDA_HOME environment variable is not set. Please set it to your CUDA install root.",
        detail="nvcc",
    ),
    Rule(
        "needs-cuda",
        r"\b(?P<detail>nvcc): (?:command )?not found",
        "/bin/sh: 1: nvcc: not found",
        "nvcc",
    ),
    Rule(
        "needs-cuda",
        r"No CUDA runtime is found",
        "No CUDA runtime is found, using CUDA_HOME='/usr/local/cuda'",
        detail="nvcc",
    ),
    # --- missing program: the usual *-config scripts, and any program a shell or Python
    # could not start.
    Rule(
        "missing-program",
        r"\b(?P<detail>pg_config) executable not found",
        "Error: pg_config executable not found.",
        "pg_config",
    ),
    Rule(
        "missing-program",
        r"Cannot compile MPI programs",
        "error: Cannot compile MPI programs. Check your configuration!!!",
        detail="mpicc",
    ),
    Rule(
        "missing-program",
        r"\bCMake (?:must be installed|is not installed|executable not found)",
        "RuntimeError: CMake must be installed to build the following extensions: _foo",
        detail="cmake",
    ),
    Rule(
        "missing-program",
        r"failed to execute (?:PosixPath\()?'(?P<detail>" + _PROGRAM + r")'",
        "graphviz.backend.execute.ExecutableNotFound: failed to execute PosixPath('dot'), make sure"
        " the Graphviz executables are on your systems' PATH",
        "dot",
    ),
    Rule(
        "missing-program",
        r"error: command '(?:[^'\s]*/)?(?P<detail>" + _PROGRAM + r")' failed: No such file or directory",
        "error: command 'swig' failed: No such file or directory",
        "swig",
    ),
    Rule(
        "missing-program",
        r"unable to execute '?(?:[^'\s:]*/)?(?P<detail>" + _PROGRAM + r")'?: No such file or directory",
        "unable to execute 'swig': No such file or directory",
        "swig",
    ),
    Rule(
        "missing-program",
        r"No such file or directory: '(?P<detail>" + _PROGRAM + r")'",
        "OSError: [Errno 2] No such file or directory: 'krb5-config'",
        "krb5-config",
    ),
    Rule(
        "missing-program",
        r"(?<![\w.+-])(?P<detail>" + _PROGRAM + r"): (?:command )?not found",
        "/bin/sh: 1: curl-config: not found",
        "curl-config",
    ),
    # --- Python 2 only: its syntax in setup.py or in a module the build imports.
    Rule(
        "python2-only",
        r"SyntaxError: Missing parentheses in call to '(?:print|exec)'",
        "SyntaxError: Missing parentheses in call to 'print'. Did you mean print(...)?",
    ),
    Rule(
        "python2-only",
        r"SyntaxError: multiple exception types must be parenthesized",
        "SyntaxError: multiple exception types must be parenthesized",
    ),
    Rule(
        "python2-only",
        r"^[ \t]*except[ \t]+[\w.]+[ \t]*,[ \t]*\w+[ \t]*:.*\n(?:.*\n){0,2}?[ \t]*SyntaxError",
        "    except Exception, e:\n           ^\nSyntaxError: exception group must be parenthesized",
    ),
    Rule(
        "python2-only",
        r"SyntaxError: leading zeros in decimal integer literals",
        "SyntaxError: leading zeros in decimal integer literals are not permitted; use an 0o prefix",
    ),
    Rule(
        "python2-only",
        r"No module named '(?:urllib2|urlparse|httplib|ConfigParser|StringIO|cStringIO|cPickle"
        r"|HTMLParser|__builtin__|commands)'",
        "ModuleNotFoundError: No module named 'urllib2'",
    ),
    # --- setuptools too new: options and modules it removed.
    Rule(
        "setuptools-too-new",
        r"\b(?P<detail>use_2to3) is invalid",
        "error in foo setup command: use_2to3 is invalid.",
        "use_2to3",
    ),
    Rule(
        "setuptools-too-new",
        r"cannot import name '(?P<detail>\w+)' from '(?:setuptools|pkg_resources)\b",
        "ImportError: cannot import name 'Feature' from 'setuptools' (/tmp/x/setuptools/__init__.py)",
        "Feature",
    ),
    Rule(
        "setuptools-too-new",
        r"module '(?:setuptools|pkg_resources)[\w.]*' has no attribute '(?P<detail>\w+)'",
        "AttributeError: module 'setuptools' has no attribute 'Feature'",
        "Feature",
    ),
    Rule(
        "setuptools-too-new",
        r"No module named '(?P<detail>setuptools\.[\w.]+)'",
        "ModuleNotFoundError: No module named 'setuptools.command.test'",
        "setuptools.command.test",
    ),
    # --- Cython 3: old .pyx code that Cython 3 (what an unpinned build gets) refuses.
    Rule(
        "cython3-incompatible",
        r"Cannot assign type '[^']*' to '[^']*noexcept[^']*'",
        "src/foo.pyx:12:24: Cannot assign type 'void (void *) except * nogil' to"
        " 'void (*)(void *) noexcept nogil'",
    ),
    Rule(
        "cython3-incompatible",
        r"^[ \t]*Error compiling Cython file:",
        "      Error compiling Cython file:",
    ),
    # --- unsupported Python: pip's "requires a different Python" (with -v also "Link requires
    # a different Python (3.11.7 not in: '<3')") and, from the finder, "Requires-Python >=3.12".
    Rule(
        "unsupported-python",
        r"requires a different Python:? \(?\S+ not in:? '(?P<detail>[^']+)'",
        "ERROR: Package 'pure-ok' requires a different Python: 3.11.7 not in '<3'",
        "<3",
    ),
    Rule(
        "unsupported-python",
        r"\bRequires-Python (?P<detail>[^\s;]+)",
        "ERROR: Ignored the following versions that require a different python version:"
        " 1.0 Requires-Python >=3.12",
        ">=3.12",
    ),
    # --- a build dependency that could not be resolved.
    Rule(
        "build-dependency-unresolved",
        r"Could not find a version that satisfies the requirement (?P<detail>[^\s;(]+)",
        "ERROR: Could not find a version that satisfies the requirement numpy==1.9.3 (from versions: none)",
        "numpy==1.9.3",
    ),
    Rule(
        "build-dependency-unresolved",
        r"No matching distribution found for (?P<detail>[^\s;(]+)",
        "ERROR: No matching distribution found for cffi>=1.0",
        "cffi>=1.0",
    ),
    # uv's resolver words it as a proof: the requirement is what "you require" (from an index:
    # "the package registry"; from find-links only: "the provided package locations").
    Rule(
        "build-dependency-unresolved",
        r"Because [\w.-]+ was not found in the (?:package registry|provided package locations) and you"
        r" require (?P<detail>[^\s,]+)",
        "      cause: Because no-such-builder was not found in the package registry and you require"
        " no-such-builder>=2, we can conclude that your requirements are unsatisfiable.",
        "no-such-builder>=2",
    ),
    Rule(
        "build-dependency-unresolved",
        r"Because (?:only )?[\w.-]+[<>=!~][^\s,]* (?:is|are) available and you require (?P<detail>[^\s,]+)",
        "      cause: Because only cython<3 is available and you require cython>=3.1, we can conclude"
        " that your requirements are unsatisfiable.",
        "cython>=3.1",
    ),
    Rule(
        "build-dependency-unresolved",
        r"\bResolutionImpossible\b",
        "ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution",
    ),
    # --- needs network during the build: name resolution or a connection failed. The host
    # comes from the sandbox's refused connections when the log does not name it.
    Rule(
        "needs-network",
        r"Could not resolve host:? (?P<detail>[\w.-]+)",
        "curl: (6) Could not resolve host: example.invalid",
        "example.invalid",
    ),
    Rule(
        "needs-network",
        r"Temporary failure in name resolution|Name or service not known|nodename nor servname provided",
        "urllib.error.URLError: <urlopen error [Errno -3] Temporary failure in name resolution>",
    ),
    Rule(
        "needs-network",
        r"\[Errno (?:101|111|113)\] (?:Network is unreachable|Connection refused|No route to host)",
        "ConnectionRefusedError: [Errno 111] Connection refused",
    ),
    Rule(
        "needs-network",
        r"Failed to establish a new connection",
        "urllib3.exceptions.NewConnectionError: <HTTPConnection object>: Failed to establish a new"
        " connection: [Errno 101] Network is unreachable",
    ),
    # --- out of memory: gcc's "Killed signal terminated program cc1plus" is the OOM killer.
    Rule(
        "out-of-memory",
        r"Killed signal terminated program (?P<detail>\S+)",
        "c++: fatal error: Killed signal terminated program cc1plus",
        "cc1plus",
    ),
    Rule("out-of-memory", r"\bMemoryError\b", "      MemoryError"),
    Rule("out-of-memory", r"Cannot allocate memory", "OSError: [Errno 12] Cannot allocate memory"),
    Rule("out-of-memory", r"virtual memory exhausted", "virtual memory exhausted: Cannot allocate memory"),
    Rule(
        "out-of-memory", r"std::bad_alloc", "terminate called after throwing an instance of 'std::bad_alloc'"
    ),
)

# The rows of what a project says in its own words (plain-words messages, board checks, build
# backends too new) are a table of their own, after these.
from .rules_words import WORD_RULES  # noqa: E402 - it needs Rule, defined above

RULES += WORD_RULES
