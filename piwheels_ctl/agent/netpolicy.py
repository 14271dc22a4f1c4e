"""Where a build may connect through its proxy: deny by default, the hosts its job names allowed.

Reached wherever they are (they may well be on the farm's own network): the build index and
the find-links hosts, each on its URL's port, and the hosts ``build_network_allow`` names
exactly. Reached at any address that is not the farm's own: the host the sdist came from (the
index's file host, named by the index, which the agent fetched from already: where a proxy or
a private mirror maps it is the operator's business). Reached only at public addresses that are
not the farm's own: the ``build_network_allow`` patterns (``*.example.org``, or ``*`` for any
host). A name is resolved once, every address it resolves to is checked, and the
proxy connects to those addresses, never to the name again. The farm's own addresses are this
machine's (asked of the kernel when the build starts), the controller's (sent with the job)
and the shared compiler cache's (which a build reaches through the agent only). Anything else
is refused before its name is even looked up.

Shipped to builders with the rest of this folder: stdlib-only, Python 2.7 and 3.4+, type
comments only.
"""

from __future__ import absolute_import, division, print_function

import re
import socket

if __package__:  # the local builder: imported as part of piwheels_ctl
    from . import localaddrs, netranges
else:  # on a builder: the files sent beside this one
    import localaddrs  # type: ignore[import-not-found, no-redef]
    import netranges  # type: ignore[import-not-found, no-redef]

try:
    from typing import Any, Iterable, List, Optional, Set, Tuple  # noqa: F401 - used in type comments
except ImportError:  # pragma: no cover - Python 2.7/3.4 builders without typing
    pass

DEFAULT_PORTS = (80, 443)  # an entry without a port: HTTP and HTTPS, what the proxy speaks
# A host of an entry: a name (a leading "*." for any name below it), "*" for any host, an IPv4
# address, or an IPv6 address in brackets.
_NAME = re.compile(r"^(\*|(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*)$")


class Refused(Exception):
    """A connection the build may not make; the text names it and says why."""


def parse_host(entry):
    # type: (str) -> Tuple[str, Optional[int]]
    """``entry`` ("host", "host:port", "*.example.org", "[2001:db8::1]:443", "*") as (host,
    port); the port is None where the entry has none (then 80 and 443). ValueError says what
    is wrong with an entry that is none of these."""
    text = entry.strip().lower()
    host, port = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if ":" not in host or netranges.packed(host) is None:
            raise ValueError("%r: not an IPv6 address in brackets" % entry)
        if rest:
            if not rest.startswith(":"):
                raise ValueError("%r: a port goes after the bracket, as [address]:port" % entry)
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    elif ":" in text:
        raise ValueError("%r: an IPv6 address goes in brackets, as [address] or [address]:port" % entry)
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError("%r: the port is not a number from 1 to 65535" % entry)
    if not text.startswith("[") and not _NAME.match(host.rstrip(".")):
        raise ValueError("%r: not a host name, '*.' and a domain, '*', or an IP address" % entry)
    return host.rstrip("."), int(port) if port else None


def url_host(url):
    # type: (str) -> Optional[Tuple[str, int]]
    """(host, port) of an http(s) URL (the scheme's port where it names none); None for any
    other URL or a folder."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return None
    hostport = rest.split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]
    try:
        host, port = parse_host(hostport)
    except ValueError:
        return None
    return host, port if port is not None else (443 if scheme.lower() == "https" else 80)


class Policy(object):
    """Where one build may connect: ``anywhere``, (host, port) pairs reached wherever they are;
    ``public``, reached only at public addresses none of which is the farm's; ``farm``, the
    addresses of the farm's own machines, to which this machine's are added now; ``named``,
    reached at any address that is not the farm's."""

    def __init__(self, anywhere, public, farm, named=()):
        # type: (Iterable[Tuple[str, Optional[int]]], Iterable[Tuple[str, Optional[int]]], Iterable[str], Iterable[Tuple[str, Optional[int]]]) -> None  # noqa: E501
        self.anywhere = list(anywhere)
        self.public = list(public)
        self.named = list(named)
        self.farm = set()  # type: Set[bytes]
        for address in list(farm) + localaddrs.local_addresses():
            self.farm.update(netranges.leads_to(address))

    def addresses(self, host, port):
        # type: (str, int) -> List[Any]
        """The addresses (``getaddrinfo``'s answers) of ``host`` the build may connect to on
        ``port``; Refused if it may not."""
        where = "%s:%d" % (host, port)
        name = host.lower().rstrip(".")
        anywhere = _matches(self.anywhere, name, port)
        named = not anywhere and _matches(self.named, name, port)
        if not anywhere and not named and not _matches(self.public, name, port):
            raise Refused("%s: refused, not a host builds may reach (build_network_allow)" % where)
        try:
            infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise Refused("%s: cannot resolve the name (%s)" % (where, exc))
        if anywhere:
            return infos
        for info in infos:
            address = str(info[4][0])
            why = None if named else netranges.special_block(address)
            if why is not None:
                raise Refused("%s: refused, %s is not a public address (%s)" % (where, address, why))
            if any(raw in self.farm for raw in netranges.leads_to(address)):
                raise Refused("%s: refused, %s is an address of the farm's own machines" % (where, address))
        return infos


def _matches(entries, host, port):
    # type: (List[Tuple[str, Optional[int]]], str, int) -> bool
    for pattern, wanted in entries:
        port_ok = port in DEFAULT_PORTS if wanted is None else port == wanted
        if port_ok and (pattern in ("*", host) or (pattern.startswith("*.") and host.endswith(pattern[1:]))):
            return True
    return False


def for_job(request, cache_host=None):
    # type: (Any, Optional[str]) -> Policy
    """The policy of a build of ``request`` (a ``jobspec.Request``): the index, the find-links
    and the operator's exact hosts anywhere; the sdist's host anywhere but the farm; the
    operator's patterns at public addresses; the farm's addresses (the controller's, sent with
    the job, and the shared compiler cache's ``cache_host``) refused."""
    anywhere = []  # type: List[Tuple[str, Optional[int]]]
    public = []  # type: List[Tuple[str, Optional[int]]]
    named = []  # type: List[Tuple[str, Optional[int]]]
    urls = [(url, anywhere) for url in [request.index_url or ""] + list(request.find_links)]
    for url, where in urls + [(request.sdist_url or "", named)]:
        found = url_host(url)
        if found is not None:
            where.append(found)
    for entry in request.network_allow:
        host, port = parse_host(entry)
        (public if "*" in host else anywhere).append((host, port))
    farm = list(request.farm_addresses) + (addresses_of(cache_host) if cache_host else [])
    return Policy(anywhere, public, farm, named)


def addresses_of(host):
    # type: (str) -> List[str]
    """Every address ``host`` resolves to now (none if it does not)."""
    try:
        return sorted(set(str(info[4][0]) for info in socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM)))
    except (socket.gaierror, UnicodeError):
        return []
