"""The farm's shared compiler cache as the master role serves it: a real nginx, started on a
loopback address with the server block rendered from the role's own template."""

from __future__ import annotations

import shlex
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import jinja2
import yaml  # type: ignore[import-untyped]  # no stubs installed; only safe_load is used

ROLE = Path(__file__).resolve().parent.parent / "roles" / "master"
NGINX = "/usr/sbin/nginx"


def render(template: str, **overrides: object) -> str:
    """roles/master/templates/``template`` with the role's defaults and ``overrides``, rendered
    as Ansible would (its ``comment`` and ``quote`` filters)."""
    values = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    values.update(overrides, ansible_managed="Rendered by the tests from the master role's template")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["comment"] = lambda text: "#\n# " + text + "\n#"
    env.filters["quote"] = lambda text: shlex.quote(str(text))
    return env.from_string((ROLE / "templates" / template).read_text()).render(values)


class CacheServer:
    """nginx on ``address`` serving the compiler cache in ``folder``, to ``allow`` only."""

    def __init__(self, folder: Path, address: str, secret: str, allow: list[str]) -> None:
        self.folder = folder
        self.address = address
        self.secret = secret
        with socket.socket() as s:
            s.bind((address, 0))
            self.port: int = s.getsockname()[1]
        self.cache = folder / "cache"
        self.access_log = folder / "access.log"
        self.process: subprocess.Popen[bytes] | None = None
        site = render(
            "nginx-ccache.conf.j2",
            master_ccache_port=f"{address}:{self.port}",
            master_ccache_dir=str(self.cache),
            master_ccache_allow=allow,
            master_ccache_secret=secret,
            master_ccache_access_log=str(self.access_log),
        )
        (folder / "piwheels-ccache.conf").write_text(site)
        # What Debian's nginx.conf gives the role's server block, in a folder of the test's own;
        # workers run as root so that they may write the test's folder.
        (folder / "nginx.conf").write_text(
            f"daemon off;\nuser root;\nworker_processes 1;\npid {folder}/nginx.pid;\n"
            f"error_log {folder}/error.log;\nevents {{}}\nhttp {{\n"
            f"    client_body_temp_path {folder}/body;\n    proxy_temp_path {folder}/proxy;\n"
            f"    fastcgi_temp_path {folder}/fastcgi;\n    uwsgi_temp_path {folder}/uwsgi;\n"
            f"    scgi_temp_path {folder}/scgi;\n    include {folder}/piwheels-ccache.conf;\n}}\n"
        )

    @property
    def url(self) -> str:
        """The URL the controller is given (``ccache_remote_url``)."""
        return f"http://{self.address}:{self.port}/ccache/{self.secret}/"

    def start(self) -> CacheServer:
        self.cache.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [NGINX, "-c", str(self.folder / "nginx.conf"), "-e", str(self.folder / "error.log")],
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection((self.address, self.port), timeout=1):
                    return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = self.folder / "error.log"
                    error = log.read_text() if log.exists() else ""
                    raise RuntimeError(f"nginx on {self.address}:{self.port}: {error}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def requests(self, project: str) -> list[tuple[str, int]]:
        """(method, status) of every request nginx logged for ``project``'s folder ("": all)."""
        found = []
        prefix = f"/ccache/{self.secret}/" + (f"{project}/" if project else "")
        for line in self.access_log.read_text().splitlines() if self.access_log.exists() else []:
            request, _, after = line.partition('"')[2].partition('" ')
            method, _, rest = request.partition(" ")
            if rest.startswith(prefix):
                found.append((method, int(after.split()[0])))
        return found

    def __enter__(self) -> CacheServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
