"""Which IP addresses are public: none of IANA's special-purpose blocks (loopback, private,
documentation, translation, anycast services and the rest), nor a deprecated or unassigned form.

A build's proxy (``buildnet``) sends a build only to public addresses, and the controller's
upstream fetcher follows links only to them. The blocks are data (``SPECIAL``): one line each,
from IANA's IPv4 and IPv6 Special-Purpose Address Registries, plus multicast and the forms
IPv6 has deprecated.

Shipped to builders with the rest of this folder: stdlib-only, Python 2.7 and 3.4+, type
comments only.
"""

from __future__ import absolute_import, division, print_function

import binascii
import socket

try:
    from typing import List, Optional, Tuple  # noqa: F401 - used in type comments
except ImportError:  # pragma: no cover - Python 2.7/3.4 builders without typing
    pass

# Every block no build may be sent to, with what it is. An IPv6 address is public only inside
# 2000::/3 (the rest of the IPv6 space is unassigned or listed here), with one exception: the
# well-known NAT64 prefix 64:ff9b::/96, which DNS64 networks give every IPv4-only host, is
# judged by the IPv4 address it leads to.
SPECIAL = """
0.0.0.0/8 this network
10.0.0.0/8 private
100.64.0.0/10 shared address space (carrier-grade NAT)
127.0.0.0/8 loopback
169.254.0.0/16 link-local (cloud metadata services)
172.16.0.0/12 private
192.0.0.0/24 IETF protocol assignments (DS-Lite, PCP and TURN anycast, NAT64 discovery)
192.0.2.0/24 documentation (TEST-NET-1)
192.31.196.0/24 AS112 DNS service
192.52.193.0/24 AMT relays
192.88.99.0/24 6to4 relay anycast (deprecated)
192.168.0.0/16 private
192.175.48.0/24 AS112 direct delegation
198.18.0.0/15 benchmarking (often a lab's private network)
198.51.100.0/24 documentation (TEST-NET-2)
203.0.113.0/24 documentation (TEST-NET-3)
224.0.0.0/4 multicast
240.0.0.0/4 reserved, and the limited broadcast address
::/96 unspecified, loopback and IPv4-compatible (deprecated)
::ffff:0:0/96 IPv4-mapped
::ffff:0:0:0/96 IPv4-translated (SIIT)
64:ff9b:1::/48 local-use IPv4/IPv6 translation
100::/64 discard-only
100:0:0:1::/64 dummy prefix
2001::/23 IETF protocol assignments (Teredo, benchmarking, ORCHID, AMT, AS112)
2001:db8::/32 documentation
2002::/16 6to4
2620:4f:8000::/48 AS112 direct delegation
3fff::/20 documentation
3ffe::/16 6bone (returned)
5f00::/16 segment routing (SRv6) SIDs
fc00::/7 unique local (private)
fe80::/10 link-local
fec0::/10 site-local (deprecated)
ff00::/8 multicast
"""

NAT64 = "64:ff9b::/96"  # the well-known translation prefix: judged by the IPv4 address within
GLOBAL_UNICAST = "2000::/3"


def packed(address):
    # type: (str) -> Optional[bytes]
    """``address`` (IPv4 or IPv6, a zone such as ``%eth0`` ignored) as 4 or 16 bytes; None if
    it is not an IP address."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_pton(family, address.split("%")[0])
        except (socket.error, ValueError):
            continue
    return None


def _block(text):
    # type: (str) -> Tuple[int, int, int]
    """(length in bytes, network as a number, prefix length) of "address/length"."""
    address, length = text.split("/")
    raw = packed(address)
    if raw is None:  # pragma: no cover - the table above is checked by the tests
        raise ValueError("not a block: %r" % text)
    return len(raw), _number(raw), int(length)


def _number(raw):
    # type: (bytes) -> int
    return int(binascii.hexlify(raw), 16)


def _within(raw, block):
    # type: (bytes, Tuple[int, int, int]) -> bool
    size, network, length = block
    shift = size * 8 - length
    return len(raw) == size and _number(raw) >> shift == network >> shift


BLOCKS = [(_block(line.split(" ", 1)[0]), line.split(" ", 1)[1]) for line in SPECIAL.strip().splitlines()]
_NAT64 = _block(NAT64)
_GLOBAL = _block(GLOBAL_UNICAST)


def special_block(address):
    # type: (str) -> Optional[str]
    """What keeps ``address`` from being public ("documentation (TEST-NET-3)", "not in the
    global unicast space", "not an IP address", ...), or None for a public address."""
    raw = packed(address)
    if raw is None:
        return "not an IP address"
    if _within(raw, _NAT64):
        inner = special_block(socket.inet_ntop(socket.AF_INET, raw[12:]))
        return None if inner is None else "NAT64 of an address that is " + inner
    for block, what in BLOCKS:
        if _within(raw, block):
            return what
    if len(raw) == 16 and not _within(raw, _GLOBAL):
        return "not in the global unicast space"
    return None


def is_public(address):
    # type: (str) -> bool
    """True if ``address`` is a public IP address: in none of the special-purpose blocks."""
    return special_block(address) is None


def reaches_no_network_of_ours(address):
    # type: (str) -> bool
    """True if ``address`` is public, or in a documentation net: those are routed nowhere, so
    where one answers, a proxy put it there (this test machine's maps PyPI's file host into
    TEST-NET-3), not a farm's own network. For the controller's downloads, never a build's."""
    why = special_block(address)
    return why is None or why.startswith("documentation")


def leads_to(address):
    # type: (str) -> List[bytes]
    """The addresses a connection to ``address`` reaches, packed: itself, and for a NAT64
    address the IPv4 address within (this machine's own public address, say)."""
    raw = packed(address)
    if raw is None:
        return []
    if _within(raw, _NAT64):
        return [raw, raw[12:]]
    return [raw]
