"""Light commands import only what they need: `--version` and `--help` neither SQLAlchemy nor
pydantic, `status` and `queue` none of the publisher, collector, wheel, Jinja2 or Alembic, a `run`
with nothing to build nothing that builds, records or fetches; and the lazily loaded commands are
listed exactly as click would list them."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import click
import pytest

from piwheels_ctl import cli as cli_package
from piwheels_ctl.cli import COMMANDS, cli

from helpers import clean_env, piwheels

# Prints, after running the CLI with the given arguments, the state of the cyclic garbage
# collector and the modules it imported.
IMPORTED = """\
import gc
import sys
from piwheels_ctl.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
sys.stdout.flush()
print("GC", int(gc.isenabled()), gc.get_freeze_count())
print("MODULES", *sorted(sys.modules))
"""


def _imported(args: list[str], env: dict[str, str], cwd: Path) -> set[str]:
    return _run_imported(args, env, cwd)[0]


def _run_imported(args: list[str], env: dict[str, str], cwd: Path) -> tuple[set[str], str]:
    """The modules the CLI imported with ``args``, and what it printed before them."""
    proc = subprocess.run(
        [sys.executable, "-c", IMPORTED, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    *printed, line = proc.stdout.splitlines()
    assert line.startswith("MODULES "), proc.stdout
    return set(line.split()[1:]), "\n".join(printed)


def _packages(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` (packages or modules) were imported."""
    return [n for n in names if any(m == n or m.startswith(n + ".") for m in modules)]


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["-h"]])
def test_version_and_help_import_no_database_or_settings_library(args: list[str], tmp_path: Path) -> None:
    modules = _imported(args, clean_env(PIWHEELS_DATA_DIR=str(tmp_path / "data")), tmp_path)
    heavy = ("sqlalchemy", "pydantic", "alembic", "jinja2", "wheel", "paramiko", "piwheels_ctl.cli.projects")
    assert _packages(modules, heavy) == [], f"piwheels-ctl {' '.join(args)} imported these"
    assert not (tmp_path / "data").exists(), "a help or version call created the data folder"


# What no light command imports: what fetches from the upstream, builds, records or explains.
UNNEEDED = (
    "alembic",
    "wheel",
    "paramiko",
    "piwheels_ctl.builds.verify",
    "piwheels_ctl.builds.record",
    "piwheels_ctl.upstream.index",
    "piwheels_ctl.upstream.page",
    "piwheels_ctl.cli.projects",
)
QUERY = ("jinja2", "piwheels_ctl.publish.publisher", "piwheels_ctl.cli.building")  # nor a query command this
PUBLISH = (
    "requests",
    "pypi_simple",
    "piwheels_ctl.catalog.projects",
    "piwheels_ctl.catalog.sync",
    "piwheels_ctl.failures.hints",
    "piwheels_ctl.failures.failed",
)


@pytest.mark.parametrize(
    ("args", "doer", "unneeded"),
    [
        (["status"], "piwheels_ctl.cli.status", QUERY),
        (["queue"], "piwheels_ctl.cli.status", QUERY),
        (["status", "--json"], "piwheels_ctl.cli.status", (*QUERY, "rich.table")),
        (["queue", "--json"], "piwheels_ctl.cli.status", (*QUERY, "rich.table")),
        (["publish"], "piwheels_ctl.publish.publisher", PUBLISH),
    ],
)
def test_light_commands_import_only_what_their_work_needs(
    args: list[str], doer: str, unneeded: tuple[str, ...], tmp_path: Path
) -> None:
    env = clean_env(PIWHEELS_DATA_DIR=str(tmp_path / "data"), PIWHEELS_DEBIAN_MIRROR="")
    piwheels(env, "init")
    # The first command registers the local builder's ABI, and with it the coverage of the wheels
    # already there (the recorder's work); what is measured is every later start.
    piwheels(env, "queue")
    modules = _imported(args, env, tmp_path)
    assert doer in modules, sorted(m for m in modules if m.startswith("piwheels_ctl"))
    imported = _packages(modules, UNNEEDED + unneeded)
    assert imported == [], f"piwheels-ctl {' '.join(args)} imported these"


def test_a_run_with_nothing_to_build_imports_nothing_that_builds_records_or_fetches(tmp_path: Path) -> None:
    # An upstream that cannot be reached: a run with nothing to mirror must not need it.
    env = clean_env(
        PIWHEELS_DATA_DIR=str(tmp_path / "data"),
        PIWHEELS_DEBIAN_MIRROR="",
        PIWHEELS_UPSTREAM="http://127.0.0.1:9/simple/",
    )
    piwheels(env, "init")
    piwheels(env, "run")  # registers the local builder's ABIs: every later run is the no-op one
    modules, printed = _run_imported(["run"], env, tmp_path)
    assert "built 0, failed 0, remaining 0" in printed, printed
    # What the command's imports made is frozen, out of the collections (the one at exit
    # too), and the collector is on again for the command's own work.
    enabled, frozen = printed.splitlines()[-1].split()[1:]
    assert (enabled, int(frozen) > 50_000) == ("1", True), printed
    assert "piwheels_ctl.builds.runner" in modules, sorted(m for m in modules if m.startswith("piwheels_ctl"))
    unneeded = (
        *UNNEEDED,
        *PUBLISH,
        "jinja2",
        "piwheels_ctl.failures.classify",
        "piwheels_ctl.publish.publisher",
        "piwheels_ctl.agent.agent",  # what is sent to builders
        "piwheels_ctl.agent.buildstep",  # what builds on this machine
    )
    assert _packages(modules, unneeded) == [], "a run with nothing to build imported these"


def test_each_listed_summary_is_the_commands_own() -> None:
    for module in sorted({module for module, _ in COMMANDS.values()}):
        importlib.import_module(f"piwheels_ctl.cli.{module}")
    registered = {name: command for name, command in cli.commands.items()}
    assert sorted(registered) == sorted(COMMANDS), "COMMANDS and the registered commands differ"
    for name, command in registered.items():
        module, summary = COMMANDS[name]
        callback = command.callback
        assert callback is not None
        assert callback.__module__ == f"{cli_package.__name__}.{module}", (name, callback.__module__)
        assert summary == command.get_short_help_str(limit=10**6), f"{name}: COMMANDS says {summary!r}"


def test_help_lists_every_command_as_click_would(tmp_path: Path) -> None:
    env = clean_env(PIWHEELS_DATA_DIR=str(tmp_path / "data"), COLUMNS="80")
    lazy = piwheels(env, "--help").stdout
    for module in sorted({module for module, _ in COMMANDS.values()}):
        importlib.import_module(f"piwheels_ctl.cli.{module}")
    eager_group = click.Group(
        name="piwheels-ctl",
        commands=cli.commands,
        help=cli.help,
        params=cli.params,
        context_settings=cli.context_settings,
    )
    # click formats to the terminal's width less two: 78 columns of COLUMNS=80.
    context = eager_group.make_context("piwheels-ctl", [], resilient_parsing=True, terminal_width=78)
    eager = eager_group.get_help(context)
    assert lazy.rstrip() == eager.rstrip()
