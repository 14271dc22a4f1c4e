"""The ``piwheels-ctl`` command: each subcommand a thin call into the parts."""

from __future__ import annotations

import gc
import importlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.markup import escape

from .. import __version__
from ..errors import NotInitialisedError, PiwheelsError, storage_error

# Light commands start fast: SQLAlchemy, pydantic and the parts built on them are imported by the
# command that needs them (`--version` and `--help` import none of them; see docs/benchmarks.md).
if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from ..abi import Glibc
    from ..config import Settings
    from ..db.engine import Database
    from ..publish.publisher import PublishResult
    from ..upstream.source import Upstream

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
            from ..config import load_settings

            self._settings = load_settings(self.config)
        return self._settings

    def database(self, *, checked: bool = True) -> Database:
        """The database; unless ``checked`` is off (``init``), it must exist at this code's schema.

        Only ``init`` creates one: any other command run in the wrong folder says where it looked
        instead of leaving an empty database there.
        """
        if self._db is None:
            from ..db.engine import Database, check_schema

            if checked:
                _must_exist(self.settings)
            self._db = Database(self.settings.database)
            if checked:
                check_schema(self._db.engine)
        return self._db

    def check_intact(self, *, full: bool = False) -> str:
        """Refuse to go on with a damaged database (bounded unless ``full``); what was checked."""
        from ..db.engine import check_integrity

        return check_integrity(self.database().engine, full=full)

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

    def publish(self, *, full: bool = False) -> PublishResult:
        """Publish the index in www/ as the settings say (``upstream_deleted``, ``public_url``)."""
        from ..publish.publisher import publish_from

        settings = self.settings
        return publish_from(
            self.database(),
            settings.www_dir,
            full=full,
            public_url=settings.public_url,
            withdraw_deleted=settings.upstream_deleted == "withdraw",
            workers=settings.publish_workers or os.cpu_count() or 1,
        )

    def glibc(self) -> Glibc:
        """The glibc deciding which manylinux wheels cover a target: ``manylinux_glibc``, else the
        builders' oldest of its platform (``db.builder_os.farm_glibc``)."""
        if self.settings.glibc is not None:
            return self.settings.glibc
        from ..db.builder_os import farm_glibc

        with self.reader() as session:
            return farm_glibc(session, self.settings)

    def refresh_local_builder(self) -> None:
        """Bring the local builder's interpreters (so the ABIs the queue is for) up to the settings."""
        if self.settings.local_builder:
            from ..farm.registry import ensure_local

            with self.session() as session:
                ensure_local(session, self.settings)

    def upstream(self) -> Upstream:
        from ..upstream.source import open_upstream  # opening one imports the HTML/JSON parsers

        settings = self.settings
        return open_upstream(
            settings.upstream_url,
            timeout=settings.http_timeout,
            redirect_hosts=settings.upstream_redirect_hosts,
            workers=settings.sync_workers,
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

# Each command: the module of this package that defines it, and the summary ``--help`` shows,
# so that listing the commands imports none of them (tests/test_cli_startup.py checks that each
# summary is the command's own).
COMMANDS: dict[str, tuple[str, str]] = {
    "add": ("projects", "Watch projects: NAME builds every version, NAME==VERSION that version."),
    "audit": ("farm", "Check that the database, the wheels on disk and the published index agree."),
    "builders": ("farm", "The builder hosts reached over SSH."),
    "deps": ("deps", "Print the apt packages a project's wheels need on a Pi (the sudo apt install line)."),
    "frontends": ("farm", "The pinned uv and pip wheels builds run with."),
    "failures": (
        "failures",
        "List failed builds (of NAME) with reason, detail, suggested Debian packages, "
        "builder, duration and log size.",
    ),
    "import": (
        "projects",
        "Add wheels built elsewhere to the index (checked first, all or nothing per wheel).",
    ),
    "init": ("projects", "Create the database, or upgrade it to this version's schema."),
    "logs": ("projects", "Print the logs of the builds of NAME[==VERSION], newest first."),
    "publish": ("publishing", "Write the static index under <data dir>/www from the database."),
    "queue": ("status", "Show what still needs a build, in build order, and the skipped versions."),
    "rebuild": ("projects", "Build NAME[==VERSION] again, before everything else (or --failed-with REASON)."),
    "remove": ("projects", "Stop building projects (their published wheels stay)."),
    "run": (
        "building",
        "Build until the queue is empty (or --limit builds); SIGTERM finishes the running builds.",
    ),
    "serve": ("publishing", "Serve the index (for one machine; a farm uses nginx)."),
    "skip": ("projects", "Never build NAME[==VERSION]."),
    "status": ("status", "Counts of projects, versions, builds, files and the queue."),
    "sync": ("projects", "Refresh the versions of watched projects from the upstream."),
    "unskip": (
        "projects",
        "Build NAME[==VERSION] again after 'skip' (NAME lifts every skip of the project).",
    ),
}


@contextmanager
def _no_collection_of_imports() -> Iterator[None]:
    """Import without the cyclic garbage collector, then freeze what was made.

    A command's imports (SQLAlchemy, pydantic, the models) make tens of thousands of objects
    and no garbage: collections while importing and at exit only walk them. Frozen, they stay
    out of every later collection, the one at exit too (a third of a light command's start).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


class LazyGroup(click.Group):
    """A group whose commands are imported when one is run, not to list them."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            # Importing the module registers its commands on this group.
            with _no_collection_of_imports():
                importlib.import_module(f".{COMMANDS[cmd_name][0]}", __package__)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            # A command not imported yet is summed up as click would: by a stand-in with its help.
            command = self.commands.get(name) or click.Command(name, help=COMMANDS[name][1])
            if not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except Exception as exc:
        database = _database_error(exc)
        if database is None:
            raise
        err.print(f"[bold red]error:[/] database: {escape(database)}", highlight=False, soft_wrap=True)
        return 1
    return 0


def _database_error(exc: Exception) -> str | None:
    """The database driver's message when ``exc`` is one of its errors (DBAPIError), else None."""
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
    if sqlalchemy_exc is None:  # SQLAlchemy was never imported: the error cannot be one of its own
        return None
    if not isinstance(exc, sqlalchemy_exc.DBAPIError):
        return None
    return " ".join(str(exc.orig).split())  # PostgreSQL's messages span lines


if __name__ == "__main__":
    sys.exit(main())
