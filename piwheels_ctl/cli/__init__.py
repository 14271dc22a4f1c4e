"""The ``piwheels-ctl`` command: each subcommand a thin call into the parts."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.markup import escape
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from .. import __version__
from ..builders import ensure_local
from ..config import Settings, load_settings
from ..database import Database, check_schema
from ..errors import NotInitialisedError, PiwheelsError, storage_error

if TYPE_CHECKING:
    from ..upstream import Upstream

err = Console(stderr=True)
out = Console()


class App:
    """Settings and the database, opened on first use."""

    def __init__(self, config: Path | None) -> None:
        self.config = config
        self._settings: Settings | None = None
        self._db: Database | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config)
        return self._settings

    def database(self, *, checked: bool = True) -> Database:
        """The database; unless ``checked`` is off (``init``), it must exist at this code's schema.

        Only ``init`` creates one: any other command run in the wrong folder says where it looked
        instead of leaving an empty database there.
        """
        if self._db is None:
            if checked:
                _must_exist(self.settings)
            self._db = Database(self.settings.database)
            if checked:
                check_schema(self._db.engine)
        return self._db

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A write transaction (on SQLite it holds the write lock: keep it short)."""
        with self.database().session() as session:
            yield session

    @contextmanager
    def reader(self) -> Iterator[Session]:
        """A read-only transaction that never holds up a writer."""
        with self.database().reader() as session:
            yield session

    def refresh_local_builder(self) -> None:
        """Bring the local builder's interpreters (so the ABIs the queue is for) up to the settings."""
        if self.settings.local_builder:
            with self.session() as session:
                ensure_local(session, self.settings)

    def upstream(self) -> Upstream:
        from ..upstream import Upstream  # pulls in the HTML/JSON parsers: only when needed

        settings = self.settings
        return Upstream(
            settings.upstream_url,
            timeout=settings.http_timeout,
            redirect_hosts=settings.upstream_redirect_hosts,
        )

    def close(self) -> None:
        if self._db is not None:
            self._db.dispose()


def _must_exist(settings: Settings) -> None:
    """Refuse a default SQLite database that is not there, naming where it was looked for."""
    if settings.database_url:
        return
    path = settings.data_dir.resolve() / "piwheels.db"
    if not path.exists():
        raise NotInitialisedError(
            f"no database at {path} (the data dir is {settings.data_dir}, from data_dir or "
            "PIWHEELS_DATA_DIR; default ./piwheels-data): run 'piwheels-ctl init' there first"
        )


pass_app = click.make_pass_decorator(App)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False),
    help="TOML settings file (default: $PIWHEELS_CONFIG).",
)
@click.version_option(__version__, prog_name="piwheels-ctl")
@click.pass_context
def cli(ctx: click.Context, config: Path | None) -> None:
    """Build wheels from sdists and serve them as a pip index."""
    app = App(config)
    ctx.obj = app
    ctx.call_on_close(app.close)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; errors become one line on stderr and a non-zero exit code."""
    try:
        try:
            cli.main(args=argv, prog_name="piwheels-ctl", standalone_mode=False)
        except OSError as exc:
            # A file of the data folder that cannot be read or written: say which, and what to do.
            raise storage_error(exc) from None
    except PiwheelsError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except click.exceptions.Abort:
        err.print("interrupted")
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except DBAPIError as exc:
        message = " ".join(str(exc.orig).split())  # PostgreSQL's messages span lines
        err.print(f"[bold red]error:[/] database: {escape(message)}", highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    return 0


from . import building, failures, farm, projects  # noqa: E402, F401 - importing them registers their commands

if __name__ == "__main__":
    sys.exit(main())
