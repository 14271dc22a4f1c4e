"""A build's network: an HTTP proxy outside the sandbox, the only way out, and a relay inside.

A build runs in a network namespace of its own with nothing but loopback. A small relay, the
sandbox's first process, listens on that loopback and passes each connection through a Unix
socket to the agent's proxy, which lets the build go where its ``netpolicy.Policy`` says (the
build index, the find-links hosts, the sdist's host and the operator's ``build_network_allow``;
nothing else, never the farm's own machines). What it refused is reported.
A request that is not a proxy request is the build's ccache asking for the farm's shared
compiler cache: given a ``remotecache.Forwarder``, the proxy hands it over, else refuses it.

Shipped to builders with the rest of this folder: stdlib-only, Python 2.7 and 3.4+, type
comments only.
"""

from __future__ import absolute_import, division, print_function

import inspect
import os
import socket
import threading

if __package__:  # the local builder: imported as part of piwheels_ctl
    from . import netpolicy
else:  # on a builder: the files sent beside this one
    import netpolicy  # type: ignore[import-not-found, no-redef]

try:
    from typing import Any, Dict, List, Optional, Tuple  # noqa: F401 - used in type comments
except ImportError:  # pragma: no cover - Python 2.7/3.4 builders without typing
    pass

PROXY_PORT = 3128  # where the relay listens, inside the build's own network namespace
PROXY_SOCKET = "/run/piwheels-proxy.sock"  # the agent's proxy, as the build sees it


# Runs inside the sandbox as its first process, with the build's own interpreter (any Python
# from 2.7 on; the agent's own interpreter and files stay out of the sandbox): listens on the
# sandbox's loopback and relays each connection to the agent's proxy through a Unix socket, sets
# the process limit, then runs the build as its child and exits with the build's status. It
# shares ``_pipe`` with the proxy: its source is put in front of this.
RELAY_MAIN = r"""
import os, resource, threading
path, port, nproc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def serve(listener):
    while True:
        client = listener.accept()[0]
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(path)
        except socket.error:
            client.close()
            upstream.close()
            continue
        for a, b in ((client, upstream), (upstream, client)):
            t = threading.Thread(target=_pipe, args=(a, b))
            t.daemon = True
            t.start()
        # The pipes hold the sockets now: they close when both end, and a build still sending to
        # a refused request gets an error then, not a wait for the next connection.
        client = upstream = a = b = None
listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", port))
listener.listen(64)
if nproc > 0:
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
t = threading.Thread(target=serve, args=(listener,))
t.daemon = True
t.start()
pid = os.fork()
if pid == 0:
    listener.close()
    try:
        os.execvp(sys.argv[4], sys.argv[4:])
    finally:
        os._exit(127)
status = os.waitpid(pid, 0)[1]
sys.exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
"""


def relay_command(python, command, max_procs):
    # type: (str, List[str], int) -> List[str]
    relay = "import socket, sys\n" + inspect.getsource(_pipe) + RELAY_MAIN
    return [python, "-E", "-s", "-c", relay, PROXY_SOCKET, str(PROXY_PORT), str(max_procs)] + command


def proxy_env():
    # type: () -> Dict[str, str]
    """The variables that send a build's pip (and anything else that honours them) to the relay."""
    url = "http://127.0.0.1:%d" % PROXY_PORT
    return {"http_proxy": url, "https_proxy": url, "HTTP_PROXY": url, "HTTPS_PROXY": url,
            "no_proxy": "", "NO_PROXY": ""}  # fmt: skip


class Proxy(object):
    """An HTTP proxy on a Unix socket: the build's only way out.

    It connects where ``policy`` (a ``netpolicy.Policy``) lets the build go, to the addresses
    the policy checked. Refused connections are kept in ``attempts`` for the build's result:
    the first ``MAX_ATTEMPTS`` different ones, so that a build that asks without end cannot
    grow the result. At most ``MAX_CLIENTS`` connections are served at once (a thread each);
    more wait to be accepted.
    """

    MAX_ATTEMPTS = 100
    MAX_CLIENTS = 64

    def __init__(self, path, policy, cache=None):
        # type: (str, Any, Optional[Any]) -> None
        self.path = path
        self.policy = policy
        self.cache = cache  # a remotecache.Forwarder, or None: no shared compiler cache
        self.attempts = []  # type: List[str]
        self._clients = threading.BoundedSemaphore(self.MAX_CLIENTS)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        os.chmod(path, 0o666)  # noqa: S103 - a build running as its own uid must be able to connect
        self._listener.listen(64)
        thread = threading.Thread(target=self._serve)
        thread.daemon = True
        thread.start()

    def close(self):
        # type: () -> None
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except socket.error:
            pass
        self._listener.close()

    def _serve(self):
        # type: () -> None
        while True:
            self._clients.acquire()
            try:
                client = self._listener.accept()[0]
            except socket.error:
                self._clients.release()
                return  # closed
            thread = threading.Thread(target=self._handle_one, args=(client,))
            thread.daemon = True
            thread.start()

    def _handle_one(self, client):
        # type: (socket.socket) -> None
        try:
            self._handle(client)
        finally:
            self._clients.release()

    def _handle(self, client):
        # type: (socket.socket) -> None
        client.settimeout(60)
        try:
            head, rest = _read_head(client)
            method, target, version = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            if target.startswith("/") and self.cache is not None:
                self.cache.forward(client, head, rest)
                client.close()
                return
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                path = None  # type: Optional[str]
            elif target.startswith("http://"):
                hostport, _, path = target[len("http://") :].partition("/")
                host, _, port = hostport.rpartition(":") if ":" in hostport.rsplit("]", 1)[-1] else (
                    hostport, "", "80")  # fmt: skip
                path = "/" + path
            else:
                raise netpolicy.Refused("not a proxy request: %r" % target[:100])
            host = host.strip("[]")
            upstream = self._connect(host, int(port))
        except netpolicy.Refused as exc:
            said = str(exc)[:300]
            if len(self.attempts) < self.MAX_ATTEMPTS and said not in self.attempts:
                self.attempts.append(said)
            _send_error(client, "403 Forbidden", str(exc))
            client.close()
            return
        except (socket.error, ValueError) as exc:
            _send_error(client, "400 Bad Request", "piwheels-ctl proxy: %s" % (exc,))
            client.close()
            return
        if path is None:
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            upstream.sendall(_origin_head(head, method, path, version) + rest)
        client.settimeout(600)
        upstream.settimeout(600)
        back = threading.Thread(target=_pipe, args=(upstream, client))
        back.daemon = True
        back.start()
        _pipe(client, upstream)
        back.join()
        upstream.close()
        client.close()

    def _connect(self, host, port):
        # type: (str, int) -> socket.socket
        error = None  # type: Optional[Exception]
        for family, kind, proto, _name, address in self.policy.addresses(host, port):
            sock = socket.socket(family, kind, proto)
            sock.settimeout(30)
            try:
                sock.connect(address)  # the address the policy checked, not the name again
                return sock
            except socket.error as exc:
                sock.close()
                error = exc
        raise netpolicy.Refused("%s:%d: cannot connect (%s)" % (host, port, error))


def _read_head(sock):
    # type: (socket.socket) -> Tuple[bytes, bytes]
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(8192)
        if not chunk or len(data) > 65536:
            raise ValueError("incomplete request head")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    return head, rest


def _origin_head(head, method, path, version):
    # type: (bytes, str, str, str) -> bytes
    """The request as the server wants it: origin-form, one request per connection."""
    lines = [("%s %s %s" % (method, path, version)).encode("latin-1")]
    for line in head.split(b"\r\n")[1:]:
        name = line.split(b":", 1)[0].strip().lower()
        if name in (b"connection", b"keep-alive", b"proxy-connection", b"proxy-authorization"):
            continue
        lines.append(line)
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _send_error(sock, status, message):
    # type: (socket.socket, str, str) -> None
    body = (message + "\n").encode("utf-8", "replace")
    try:
        head = "HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
        sock.sendall((head % (status, len(body))).encode("latin-1") + body)
    except socket.error:
        pass


def _pipe(a, b):
    # type: (socket.socket, socket.socket) -> None
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except socket.error:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except socket.error:
            pass
