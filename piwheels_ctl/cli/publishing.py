"""The `publish` and `serve` commands: the static index from the database, and serving it.

Kept apart from the other project commands so that publishing imports the publisher only, not
what fetches from the upstream, builds or explains failures (a publish after each wheel).
"""

from __future__ import annotations

import click

from ..errors import InputError, storage_error
from . import App, cli, err, out, pass_app


@cli.command()
@click.option("--full", is_flag=True, help="Rewrite every page, not only what changed.")
@pass_app
def publish(app: App, full: bool) -> None:
    """Write the static index under <data dir>/www from the database."""
    app.check_intact()  # a damaged database would withdraw what it no longer shows
    try:
        result = app.publish(full=full)
    except OSError as exc:
        raise storage_error(exc, app.settings.www_dir) from None
    out.print(
        f"published {result.projects_written} project page(s)"
        + (", root index rewritten" if result.root_written else "")
        + f" in {app.settings.www_dir}"
    )


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@pass_app
def serve(app: App, host: str, port: int) -> None:
    """Serve the index (for one machine; a farm uses nginx)."""
    from ..publish.publisher import DEFAULT_PUBLIC_URL
    from ..publish.server import serve as serve_index

    www = app.settings.www_dir
    if not (www / "simple").is_dir():
        raise InputError(f"{www}: nothing published yet (run 'piwheels-ctl publish')")

    def announce(url: str) -> None:
        # Said once the port is bound: a client started on this line finds the server there.
        err.print(f"serving {www} on {url} (index: {url}simple/)", highlight=False, soft_wrap=True)
        if app.settings.public_url is None and url != DEFAULT_PUBLIC_URL:
            err.print(
                f"[yellow]warning:[/] public_url is not set: pages show install lines for the address"
                f" a browser reached them at, and {DEFAULT_PUBLIC_URL} without JavaScript; set"
                f" public_url (or PIWHEELS_PUBLIC_URL) to {url} or the address clients use, then"
                " 'piwheels-ctl publish --full'",
                highlight=False,
                soft_wrap=True,
            )

    serve_index(www, host, port, app.settings.logs_dir, announce=announce)
