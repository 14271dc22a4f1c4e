"""The platform of a builder's interpreter: the wheel tags it builds, the kernel and userland.

Shipped to builders with the rest of this folder: stdlib-only, Python 2.7 and 3.4+, type
comments only.
"""

from __future__ import absolute_import, division, print_function

import os
import platform
import re
import struct
import subprocess
import sys
import sysconfig

if __package__:  # the local builder: imported as part of piwheels_ctl
    from . import jobspec
else:  # on a builder: the files sent beside this one
    import jobspec  # type: ignore[import-not-found, no-redef]

try:
    from typing import Any, Dict, Optional  # noqa: F401 - used in type comments
except ImportError:  # pragma: no cover - Python 2.7/3.4 builders without typing
    pass

# A 64-bit kernel's machine -> the platform of a 32-bit userland on it.
USERLAND_32 = {"aarch64": "armv7l", "armv8l": "armv7l", "x86_64": "i686"}
# The interpreter's tags among the facts of a build (``jobspec.PLATFORM_KEYS``).
TAG_KEYS = ("python_tag", "abi_tag", "platform_tag")


def describe():
    # type: () -> Dict[str, Any]
    """The tags of the running interpreter, as bdist_wheel names the wheels it builds, and the
    platform it runs on (the probe's answer)."""
    result = interpreter()
    if result["platform_tag"] == "linux_armv7l":
        result["armv6_userland"] = armv6_userland()
    result["os"] = os_identity()
    return result


def os_identity():
    # type: () -> Dict[str, Optional[str]]
    """What this builder is (``jobspec.OS_KEYS``): its OS (os-release's ID and VERSION_CODENAME),
    the Debian architecture and the machine of its userland, and its glibc's version; None where
    it does not say."""
    release = os_release()
    machine = userland_machine()
    try:
        glibc = os.confstr("CS_GNU_LIBC_VERSION")  # "glibc 2.36"; absent on musl
    except (AttributeError, ValueError, OSError):
        glibc = None
    glibc_version = glibc.split()[-1] if glibc and glibc.startswith("glibc ") else None
    return {
        "id": release.get("ID") or None,
        "codename": release.get("VERSION_CODENAME") or _codename(release) or None,
        "arch": dpkg_architecture(machine),
        "machine": machine,
        "glibc": glibc_version,
    }


def _codename(release):
    # type: (Dict[str, str]) -> Optional[str]
    """The codename of an os-release without VERSION_CODENAME (Debian 8's: "8 (jessie)")."""
    match = re.search(r"\(([a-z]+)\)", release.get("VERSION", ""))
    return match.group(1) if match else None


def userland_machine():
    # type: () -> str
    """The machine the userland is built for (``uname -m`` as its own programs see it): a 32-bit
    userland on a 64-bit kernel is armv7l or i686, not the kernel's aarch64 or x86_64."""
    machine = kernel_machine()
    if pointer_bits() == 32 and machine in USERLAND_32:
        return USERLAND_32[machine]
    return "armv7l" if machine == "armv8l" else machine


# A userland's machine -> its Debian architecture, where dpkg cannot be asked.
DPKG_ARCH = {"x86_64": "amd64", "i686": "i386", "i386": "i386", "aarch64": "arm64", "armv7l": "armhf",
             "armv6l": "armhf", "ppc64le": "ppc64el", "s390x": "s390x", "riscv64": "riscv64"}  # fmt: skip


def dpkg_architecture(machine):
    # type: (str) -> Optional[str]
    """The Debian architecture of this userland (``dpkg --print-architecture``), else the usual one
    of ``machine``; None where neither knows."""
    try:
        with open(os.devnull, "rb") as devnull:
            proc = subprocess.Popen(["dpkg", "--print-architecture"], stdin=devnull,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
            out = proc.communicate()[0].decode("ascii", "replace").strip()
        if proc.returncode == 0 and re.match(r"^[a-z0-9]+$", out):
            return out
    except OSError:
        pass
    return DPKG_ARCH.get(machine)


def build_facts(python):
    # type: (str) -> Dict[str, Any]
    """The builder as a build by the interpreter ``python`` finds it (``jobspec.PLATFORM_KEYS``):
    the kernel's machine and the personality, and the interpreter's tags when the agent runs in
    ``python`` (on a builder it does; the local builder's agent may build with another)."""
    facts = interpreter()
    same = os.path.realpath(sys.executable) == os.path.realpath(python)
    return dict((key, facts[key]) for key in jobspec.PLATFORM_KEYS if same or key not in TAG_KEYS)


def interpreter():
    # type: () -> Dict[str, Any]
    """The tags of the running interpreter and the machine it runs on (no compiler asked)."""
    impl = platform.python_implementation()
    major, minor = sys.version_info[:2]
    python_tag = ("pp" if impl == "PyPy" else "cp") + str(major) + str(minor)
    soabi = sysconfig.get_config_var("SOABI")
    if soabi and soabi.startswith("cpython-"):
        abi_tag = "cp" + soabi.split("-")[1]
    elif soabi and soabi.startswith("pypy"):
        abi_tag = "_".join(soabi.split("-")[:2])
    else:  # CPython 2.7 has no SOABI: rebuild it from the build flags
        abi_tag = "cp" + str(major) + str(minor)
        if sysconfig.get_config_var("Py_DEBUG"):
            abi_tag += "d"
        if sysconfig.get_config_var("WITH_PYMALLOC") and major == 2:
            abi_tag += "m"
        if major == 2 and sys.maxunicode == 0x10FFFF:
            abi_tag += "u"
    plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    machine = kernel_machine()
    personality = None
    if pointer_bits() == 32 and machine in USERLAND_32:
        # A 32-bit userland on a 64-bit kernel (Raspberry Pi OS on a Pi 4/5): its wheels are for
        # the userland, and its builds run under the 32-bit personality (see build_personality).
        plat = "linux_" + USERLAND_32[machine]
        personality = "linux32"
    elif plat == "linux_armv8l":  # the same userland already under linux32
        plat = "linux_armv7l"
    return {
        "python_tag": python_tag,
        "abi_tag": abi_tag,
        "platform_tag": plat,
        "implementation": impl,
        "version": "%d.%d.%d" % tuple(sys.version_info[:3]),
        "executable": sys.executable,
        "machine": machine,
        "personality": personality,
    }


def kernel_machine():
    # type: () -> str
    """The machine the kernel reports (``uname -m``)."""
    return os.uname()[4]


def pointer_bits():
    # type: () -> int
    """The running interpreter's pointer size in bits: 32 for a 32-bit userland."""
    return struct.calcsize("P") * 8


def armv6_userland():
    # type: () -> bool
    """True if this userland is built for ARMv6 (Raspbian, 32-bit Raspberry Pi OS), not ARMv7.

    Asked of the compiler (the architecture it targets by default) and /etc/os-release, never
    guessed from a machine name: a Debian armhf userland on the same Pi is ARMv7.
    """
    try:
        with open(os.devnull, "rb") as devnull:
            proc = subprocess.Popen(["cc", "-dM", "-E", "-"], stdin=devnull,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
            out = proc.communicate()[0].decode("ascii", "replace")
    except OSError:
        out = ""
    match = re.search(r"#define __ARM_ARCH (\d+)", out)
    if match:
        return int(match.group(1)) <= 6
    return os_release().get("ID") == "raspbian"  # no compiler: Raspbian's userland is ARMv6


def os_release():
    # type: () -> Dict[str, str]
    """/etc/os-release as a dict (empty where there is none)."""
    values = {}  # type: Dict[str, str]
    try:
        with open("/etc/os-release") as f:
            for line in f:
                key, sep, value = line.strip().partition("=")
                if sep:
                    values[key] = value.strip('"')
    except (IOError, OSError):
        pass
    return values


def build_personality():
    # type: () -> Optional[str]
    """The platform a build must be tagged for when it needs the 32-bit personality, else None."""
    machine = kernel_machine()
    if pointer_bits() == 32 and machine in USERLAND_32:
        return "linux-" + USERLAND_32[machine]
    return None
