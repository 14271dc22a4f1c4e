"""Cross builds: the environment in which an x86_64 builder's PEP 517 build makes ARM wheels.

What crossenv does, by hand, with Debian's multiarch packages: the build runs the builder's own
interpreter, which reads the target's ``_sysconfigdata`` (``libpython3.X-stdlib:armhf`` ships
``_sysconfigdata__linux_arm-linux-gnueabihf.py`` beside the builder's own) through
``_PYTHON_SYSCONFIGDATA_NAME``, so the extension suffix and the ABI tag are the target's;
``_PYTHON_HOST_PLATFORM`` makes the platform tag the target's; the compiler, linker and
archiver are the cross toolchain's, and pkg-config looks only in the target's multiarch folder.
The builder's own load check cannot load the target's code: a cross-built wheel is load-checked
on the target (a check job) before it is served, and here only its ELF headers are checked.

Shipped to builders with the rest of this folder: stdlib-only, Python 2.7 and 3.4+, type
comments only.
"""

from __future__ import absolute_import, division, print_function

import glob
import os
import subprocess

try:
    from typing import Any, Dict, List, Optional  # noqa: F401 - used in type comments
except ImportError:  # pragma: no cover - Python 2.7/3.4 builders without typing
    pass

# Debian architecture -> the GNU triplet of its toolchain and multiarch folder, the platform a
# wheel for it is tagged with, and ELF's e_machine for its code.
TARGETS = {
    "armhf": {"triplet": "arm-linux-gnueabihf", "platform": "linux-armv7l", "e_machine": 40},
    "arm64": {"triplet": "aarch64-linux-gnu", "platform": "linux-aarch64", "e_machine": 183},
}  # type: Dict[str, Dict[str, Any]]


class CrossError(Exception):
    """This builder cannot cross-build for the target (a missing toolchain or target Python)."""


def _stdlib(python):
    # type: (str) -> str
    """The standard library folder of the interpreter ``python``."""
    code = "import sysconfig; print(sysconfig.get_paths()['stdlib'])"
    with open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen([python, "-c", code], stdin=devnull, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)  # fmt: skip
        out = proc.communicate()[0].decode("utf-8", "replace").strip()
    if proc.returncode != 0 or not os.path.isdir(out):
        raise CrossError("%s: cannot find its standard library" % (python,))
    return out


def sysconfig_module(python, target):
    # type: (str, str) -> str
    """The module name of ``target``'s ``_sysconfigdata`` beside ``python``'s standard library."""
    triplet = TARGETS[target]["triplet"]
    # CPython's own name first (_sysconfigdata_{abiflags}_linux_{multiarch}), then Debian's alias.
    found = sorted(glob.glob(os.path.join(_stdlib(python), "_sysconfigdata_*_%s.py" % triplet)),
                   key=lambda path: "_linux_" not in os.path.basename(path))  # fmt: skip
    if not found:
        raise CrossError("no _sysconfigdata for %s beside %s (install libpython3-dev:%s)"
                         % (triplet, python, target))  # fmt: skip
    return os.path.basename(found[0])[: -len(".py")]


def _toolchain(triplet):
    # type: (str) -> Dict[str, str]
    """The cross compilers and tools, each checked to be on PATH."""
    tools = {"CC": "gcc", "CXX": "g++", "AR": "ar", "STRIP": "strip"}
    found = {}  # type: Dict[str, str]
    path = os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
    for var, tool in tools.items():
        name = "%s-%s" % (triplet, tool)
        if not any(os.access(os.path.join(d, name), os.X_OK) for d in path):
            package = "%s-%s" % ("g++" if tool == "g++" else "gcc", triplet.replace("_", "-"))
            raise CrossError("%s is not installed (Debian package %s)" % (name, package))
        found[var] = name
    return found


def environment(python, target):
    # type: (str, str) -> Dict[str, str]
    """The variables that make a PEP 517 build by ``python`` build for ``target``."""
    if target not in TARGETS:
        raise CrossError("unknown cross target %r (one of %s)" % (target, ", ".join(sorted(TARGETS))))
    spec = TARGETS[target]
    triplet = spec["triplet"]
    env = _toolchain(triplet)
    env.update(
        {
            "_PYTHON_HOST_PLATFORM": spec["platform"],
            "_PYTHON_SYSCONFIGDATA_NAME": sysconfig_module(python, target),
            "LDSHARED": "%s -shared" % env["CC"],
            "LDCXXSHARED": "%s -shared" % env["CXX"],
            # pkg-config finds the target's libraries only, never the builder's own.
            "PKG_CONFIG_LIBDIR": "/usr/lib/%s/pkgconfig:/usr/share/pkgconfig" % triplet,
            "PKG_CONFIG_PATH": "",
            # CMake-based backends (scikit-build-core) read these.
            "CMAKE_SYSTEM_NAME": "Linux",
            "CMAKE_SYSTEM_PROCESSOR": spec["platform"].split("-", 1)[1],
        }
    )
    return env


def describe(python, target):
    # type: (str, str) -> Dict[str, Any]
    """What a probe with ``--cross`` answers: the target's tags as ``python`` builds them there,
    and the cross mark ("cross": the target's Debian architecture and the triplet)."""
    module = sysconfig_module(python, target)
    _toolchain(TARGETS[target]["triplet"])
    values = {}  # type: Dict[str, Any]
    with open(os.path.join(_stdlib(python), module + ".py")) as f:
        exec(compile(f.read(), module, "exec"), values)  # noqa: S102 - Debian's own data file
    config = values.get("build_time_vars") or {}
    soabi = config.get("SOABI") or ""
    version = str(config.get("VERSION") or "").replace(".", "")
    if not soabi.startswith("cpython-") or not version:
        raise CrossError("%s: no CPython SOABI" % (module,))
    return {
        "python_tag": "cp" + version,
        "abi_tag": "cp" + soabi.split("-")[1],
        "platform_tag": TARGETS[target]["platform"].replace("-", "_"),
        "cross": {"target": target, "triplet": TARGETS[target]["triplet"], "sysconfigdata": module},
    }


def elf_refusals(files, target):
    # type: (List[Dict[str, Any]], str) -> List[str]
    """The wheels of a cross build whose ELF files are for another machine than ``target``'s."""
    wanted = TARGETS[target]["e_machine"]
    found = []  # type: List[str]
    for entry in files:
        for elf in entry.get("elf") or ():
            if elf.get("machine") != wanted:
                found.append("%s: an ELF file for machine %s, not %s's (%d)"
                             % (entry["name"], elf.get("machine"), target, wanted))  # fmt: skip
    return found
