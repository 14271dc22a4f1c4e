"""What a wheel's ELF files are and need from the system: their machine and class, the shared
libraries its compiled modules link, and the builder's Debian packages that provide them.

Shipped to builders with the rest of this folder: stdlib-only, Python 2.7 and 3.4+, type
comments only.
The ELF files are read here (``DT_NEEDED`` entries of the dynamic section), never run.
"""

from __future__ import absolute_import, division, print_function

import os
import posixpath
import struct
import subprocess
import zipfile

try:
    from typing import Dict, List, Optional, Tuple  # noqa: F401 - type comments
except ImportError:  # pragma: no cover - Python 2.7/3.4 builders without typing
    pass

SHT_DYNAMIC = 6
DT_NEEDED = 1
# A compiled module larger than this is not read (a wheel is checked for size by the controller).
MAX_MEMBER = 256 * 1024 * 1024


# The start of an ELF file that says what it is: e_ident (16 bytes), e_type, e_machine.
HEADER = 20
ELFCLASS = {b"\x01": 32, b"\x02": 64}


def _ident(data):
    # type: (bytes) -> Optional[Tuple[int, str]]
    """(bits, struct's byte order) of the ELF file that ``data`` starts, or None if it is not one."""
    if data[:4] != b"\x7fELF" or len(data) < HEADER or data[4:5] not in ELFCLASS:
        return None
    return ELFCLASS[data[4:5]], "<" if data[5:6] == b"\x01" else ">"


def machine(data):
    # type: (bytes) -> Optional[Tuple[int, int]]
    """(e_machine, class in bits) of the ELF file ``data`` starts, or None if it is not one."""
    ident = _ident(data)
    if ident is None:
        return None
    return struct.unpack_from(ident[1] + "H", data, 18)[0], ident[0]


def wheel_machines(path):
    # type: (str) -> Optional[List[Dict[str, int]]]
    """The kinds of ELF file in the wheel at ``path``, each once (``jobspec.ELF_KEYS``): what its
    compiled code was made for, whatever its tags say. None if the wheel cannot be read."""
    found = set()
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                with archive.open(info) as member:
                    kind = machine(member.read(HEADER))
                if kind is not None:
                    found.add(kind)
    except Exception:  # noqa: BLE001 - a wheel the controller will refuse on its own
        return None
    return [{"machine": m, "class": bits} for m, bits in sorted(found)]


def needed(data):
    # type: (bytes) -> Optional[List[str]]
    """The ``DT_NEEDED`` sonames of the ELF file ``data``, or None if it is not an ELF file."""
    ident = _ident(data)
    if ident is None or len(data) < 52:
        return None
    wide = ident[0] == 64
    end = ident[1]
    try:
        if wide:
            (shoff,) = struct.unpack_from(end + "Q", data, 0x28)
            shentsize, shnum = struct.unpack_from(end + "HH", data, 0x3A)
            header, entry = end + "IIQQQQIIQQ", end + "qQ"
        else:
            (shoff,) = struct.unpack_from(end + "I", data, 0x20)
            shentsize, shnum = struct.unpack_from(end + "HH", data, 0x2E)
            header, entry = end + "IIIIIIIIII", end + "iI"
        sections = [struct.unpack_from(header, data, shoff + i * shentsize) for i in range(shnum)]
        names = []  # type: List[str]
        for section in sections:
            if section[1] != SHT_DYNAMIC:
                continue
            offset, size, link = section[4], section[5], section[6]
            strtab = sections[link]
            strings = data[strtab[4] : strtab[4] + strtab[5]]
            step = struct.calcsize(entry)
            for at in range(offset, offset + size - step + 1, step):
                tag, value = struct.unpack_from(entry, data, at)
                if tag == 0:
                    break
                if tag == DT_NEEDED:
                    names.append(strings[value : strings.index(b"\0", value)].decode("utf-8", "replace"))
        return names
    except (struct.error, IndexError, ValueError):
        return None  # a damaged file: nothing to say about it


def wheel_libraries(path):
    # type: (str) -> List[str]
    """The sonames the wheel's compiled modules link that the wheel does not itself contain."""
    wanted = set()  # type: set[str]
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        inside = set(posixpath.basename(info.filename) for info in infos)
        for info in infos:
            base = posixpath.basename(info.filename)
            if not (base.endswith(".so") or ".so." in base) or info.file_size > MAX_MEMBER:
                continue
            for soname in needed(archive.read(info)) or ():
                if soname not in inside:
                    wanted.add(soname)
    return sorted(wanted)


def library_paths():
    # type: () -> Dict[str, str]
    """soname -> path of the libraries the dynamic linker knows (``ldconfig -p``)."""
    paths = {}  # type: Dict[str, str]
    for ldconfig in ("/sbin/ldconfig", "/usr/sbin/ldconfig", "ldconfig"):
        try:
            with open(os.devnull, "wb") as devnull:
                out = subprocess.check_output([ldconfig, "-p"], stderr=devnull)
        except (OSError, subprocess.CalledProcessError):
            continue
        for line in out.decode("utf-8", "replace").splitlines()[1:]:
            name, sep, path = line.strip().partition(" => ")
            if sep:
                paths.setdefault(name.split(" (")[0], path.strip())
        break
    return paths


def debian_packages(paths):
    # type: (List[str]) -> Dict[str, str]
    """path -> the Debian package that owns it (``dpkg -S``); paths no package owns are left out."""
    if not paths:
        return {}
    queries = sorted(set(paths + [os.path.realpath(p) for p in paths]))
    try:
        proc = subprocess.Popen(["dpkg", "-S"] + queries, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out = proc.communicate()[0].decode("utf-8", "replace")
    except OSError:
        return {}  # not a Debian system
    owners = {}  # type: Dict[str, str]
    for line in out.splitlines():
        package, sep, path = line.partition(": ")
        if sep and "," not in package and not package.startswith("diversion"):
            owners[path.strip()] = package.split(":")[0]
    found = {}  # type: Dict[str, str]
    for path in paths:
        owner = owners.get(path) or owners.get(os.path.realpath(path))
        if owner:
            found[path] = owner
    return found


def wheel_deps(wheels):
    # type: (List[str]) -> Dict[str, List[Dict[str, Optional[str]]]]
    """For each wheel: the libraries it needs, each with its path and Debian package here (or None)."""
    libraries = dict((wheel, wheel_libraries(wheel)) for wheel in wheels)
    if not any(libraries.values()):
        return dict((wheel, []) for wheel in wheels)
    paths = library_paths()
    packages = debian_packages(
        sorted(set(paths[s] for libs in libraries.values() for s in libs if s in paths))
    )
    result = {}  # type: Dict[str, List[Dict[str, Optional[str]]]]
    for wheel, sonames in libraries.items():
        result[wheel] = [
            {"library": s, "path": paths.get(s), "package": packages.get(paths.get(s, ""))} for s in sonames
        ]
    return result
