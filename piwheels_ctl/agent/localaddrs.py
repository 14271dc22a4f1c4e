"""This machine's own IP addresses, asked of the kernel: every address of every interface, the
public-looking ones included, so that a build's proxy never sends a build to this machine.

The C library's ``getifaddrs`` (through ctypes) answers; where it cannot be called, the kernel's
own tables in /proc do (``/proc/net/if_inet6``, and the local routes of ``/proc/net/fib_trie``).

Shipped to builders with the rest of this folder: stdlib-only, Python 2.7 and 3.4+, type
comments only.
"""

from __future__ import absolute_import, division, print_function

import binascii
import socket

try:
    from typing import Any, List, Set  # noqa: F401 - used in type comments
except ImportError:  # pragma: no cover - Python 2.7/3.4 builders without typing
    pass

IF_INET6 = "/proc/net/if_inet6"
FIB_TRIE = "/proc/net/fib_trie"


def local_addresses():
    # type: () -> List[str]
    """Every address of this machine's interfaces (its network namespace's), as text, sorted."""
    try:
        found = _from_getifaddrs()
    except (ImportError, OSError, AttributeError, ValueError):
        found = set()
    if not found:  # no ctypes, a C library without getifaddrs: the kernel's tables
        found = _from_proc()
    return sorted(found)


def _from_getifaddrs():
    # type: () -> Set[str]
    import ctypes  # here: a Python built without ctypes still has the /proc tables

    class Ifaddrs(ctypes.Structure):
        pass

    # struct ifaddrs of Linux's C libraries (glibc, musl): the address is a struct sockaddr
    # whose family is its first unsigned short.
    Ifaddrs._fields_ = [
        ("next", ctypes.POINTER(Ifaddrs)),
        ("name", ctypes.c_char_p),
        ("flags", ctypes.c_uint),
        ("addr", ctypes.c_void_p),
        ("netmask", ctypes.c_void_p),
        ("broadaddr", ctypes.c_void_p),
        ("data", ctypes.c_void_p),
    ]
    libc = ctypes.CDLL(None, use_errno=True)  # the C library this interpreter is linked with
    libc.getifaddrs.argtypes = [ctypes.POINTER(ctypes.POINTER(Ifaddrs))]
    libc.freeifaddrs.argtypes = [ctypes.POINTER(Ifaddrs)]
    head = ctypes.POINTER(Ifaddrs)()
    if libc.getifaddrs(ctypes.byref(head)) != 0:
        raise OSError(ctypes.get_errno(), "getifaddrs failed")
    found = set()  # type: Set[str]
    try:
        entry = head
        while entry:
            addr = entry.contents.addr
            if addr:
                family = ctypes.cast(addr, ctypes.POINTER(ctypes.c_ushort)).contents.value
                if family == socket.AF_INET:  # sockaddr_in: family, port, then the address
                    found.add(socket.inet_ntop(family, ctypes.string_at(addr + 4, 4)))
                elif family == socket.AF_INET6:  # sockaddr_in6: family, port, flow info, address
                    found.add(socket.inet_ntop(family, ctypes.string_at(addr + 8, 16)))
            entry = entry.contents.next
    finally:
        libc.freeifaddrs(head)
    return found


def _from_proc():
    # type: () -> Set[str]
    found = set()  # type: Set[str]
    try:
        with open(IF_INET6) as table:
            for line in table:
                fields = line.split()
                if fields and len(fields[0]) == 32:
                    found.add(socket.inet_ntop(socket.AF_INET6, binascii.unhexlify(fields[0])))
    except (IOError, OSError, TypeError, ValueError):  # binascii.Error is a ValueError
        pass
    # fib_trie lists each route's address ("|-- 203.0.113.7"), then its kind: the ones this
    # machine answers to are "/32 host LOCAL".
    last = None
    try:
        with open(FIB_TRIE) as trie:
            for line in trie:
                words = line.split()
                if len(words) == 2 and words[0] in ("|--", "+--"):
                    last = words[1]
                elif last is not None and words[:3] == ["/32", "host", "LOCAL"]:
                    found.add(last)
    except (IOError, OSError):
        pass
    return found
