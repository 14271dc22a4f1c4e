"""A Debian mirror on loopback: a real HTTP server with Contents indexes made from test text."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class _QuietHandler(SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, format: str, *args: Any) -> None:
        self.requests.append(self.path)


@contextmanager
def debian_mirror(
    root: Path, contents_amd64: str, contents_all: str, suite: str = "bookworm"
) -> Iterator[tuple[str, list[str]]]:
    """Serve ``dists/SUITE/main/Contents-{amd64,all}.gz`` from ``root`` on 127.0.0.1: the
    mirror's URL and the list of paths asked for."""
    main = root / "dists" / suite / "main"
    main.mkdir(parents=True)
    (main / "Contents-amd64.gz").write_bytes(gzip.compress(contents_amd64.encode()))
    (main / "Contents-all.gz").write_bytes(gzip.compress(contents_all.encode()))
    asked: list[str] = []
    handler = type("Handler", (_QuietHandler,), {"requests": asked})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", asked
    finally:
        server.shutdown()
        server.server_close()
