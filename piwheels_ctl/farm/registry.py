"""The registry of builders and the ABIs they build for."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from ..abi import Glibc
from ..agent import sandbox
from ..config import Settings
from ..db.builder_os import farm_glibc, glibc_by_platform
from ..db.made_once import get_or_make
from ..db.models import Abi, Builder, BuilderPython
from ..errors import ConfigError, InputError
from ..queue import upkeep
from ..queue.coverage import cover_new_abi, uncover_other_releases
from ..queue.releases import release_of
from ..queue.upstream_coverage import cover_abi
from .agentcall import probe_tag, python_of

AGENT = Path(__file__).parent.parent / "agent" / "agent.py"
LOCAL = "local"
BUILDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
PYTHON_PATH = re.compile(r"^/?[A-Za-z0-9._+-]+(/[A-Za-z0-9._+-]+)*$")


def probe_local(python: str, timeout: float = 60.0) -> dict[str, Any]:
    """Ask the interpreter ``python`` on this machine for its wheel tags."""
    path = shutil.which(python)
    if path is None:
        raise ConfigError(f"pythons: {python!r} is not an interpreter on this machine")
    try:
        out = subprocess.run(
            [path, str(AGENT), "probe"],
            capture_output=True,
            check=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        ).stdout
        result: dict[str, Any] = json.loads(out)
    except (subprocess.SubprocessError, OSError, ValueError) as exc:
        raise ConfigError(f"pythons: {python!r} could not be probed: {exc}") from None
    if result.get("unreadable"):
        # Every build with it would fail at once, and not by the project's fault.
        raise ConfigError(f"pythons: {python!r}: the builds' own uids cannot run it: {result['unreadable']}")
    return result


def ensure_abi(session: Session, probe: dict[str, Any], glibc: Glibc = None) -> Abi:
    """The ABI row for a probed interpreter, created (and its coverage filled in, by our wheels
    and by the upstream's, ``glibc`` deciding for manylinux ones) when new."""
    tag = probe_tag(probe)
    abi, made = get_or_make(
        session,
        Abi,
        Abi.tag == tag,
        lambda: Abi(
            tag=tag,
            python_tag=probe["python_tag"],
            abi_tag=probe["abi_tag"],
            platform_tag=probe["platform_tag"],
            active=True,
        ),
    )
    if made:
        cover_new_abi(session, abi)
        cover_abi(session, abi, glibc)
        # Its pairs again at the commit: the savepoint's own commit computed them uncovered.
        upkeep.touch(session, abis=[abi.id])
    return abi


def refresh_active(session: Session) -> None:
    """An ABI is active while some builder has an interpreter for it."""
    has_python = exists().where(BuilderPython.abi_id == Abi.id)
    changed = session.scalars(select(Abi.id).where(Abi.active != has_python)).all()
    if changed:
        upkeep.touch(session, abis=changed)
        session.execute(update(Abi).where(Abi.id.in_(changed)).values(active=has_python))


def set_pythons(
    session: Session,
    builder: Builder,
    probes: dict[str, dict[str, Any]],
    glibc: Glibc = None,
) -> None:
    """Make ``builder``'s interpreters exactly ``probes`` (path, or ``cross_key``, → probe result);
    ``info["cross"]`` says which ABIs it cross-builds, and for which Debian architecture."""
    wanted = {ensure_abi(session, probe, glibc).id: python_of(key) for key, probe in probes.items()}
    cross = {probe_tag(p): p["cross"]["target"] for p in probes.values() if isinstance(p.get("cross"), dict)}
    if (builder.info or {}).get("cross", {}) != cross:
        builder.info = {**(builder.info or {}), "cross": cross}
    for python in list(builder.pythons):
        if python.abi_id not in wanted:
            builder.pythons.remove(python)
        else:
            python.path = wanted.pop(python.abi_id)
    for abi_id, path in wanted.items():
        builder.pythons.append(BuilderPython(abi_id=abi_id, path=path))
    session.flush()
    refresh_active(session)
    # Its release and ABIs decide where our wheels cover them: again only when they changed
    # (a new ABI, another release), not at every start of the local builder.
    stands = [release_of(builder.info), sorted(p.abi_id for p in builder.pythons)]
    if builder.info.get("covered_as") != stands:
        uncover_other_releases(session)
        builder.info = {**builder.info, "covered_as": stands}


def _cached_probes(builder: Builder, pythons: list[str]) -> dict[str, dict[str, Any]]:
    """Probe each interpreter, reusing the last answer while its executable is unchanged."""
    cache: dict[str, Any] = dict(builder.info.get("probes", {}))
    probes: dict[str, dict[str, Any]] = {}
    for python in pythons:
        path = shutil.which(python)
        stamp = os.stat(path).st_mtime_ns if path else None
        entry = cache.get(python)
        # A probe of an agent before builders said what they are ("os") is asked again.
        if entry is None or entry.get("stamp") != stamp or "os" not in entry.get("probe", {}):
            entry = {"stamp": stamp, "probe": probe_local(python)}
            cache[python] = entry
        probes[python] = entry["probe"]
    builder.info = {**builder.info, "probes": {k: cache[k] for k in pythons}}
    return probes


def ensure_local(session: Session, settings: Settings) -> Builder:
    """The builder that is this machine, with the configured interpreters, slots and sandbox."""
    pythons, slots = settings.pythons, settings.slots
    get_or_make(
        session,
        Builder,
        Builder.name == LOCAL,
        lambda: Builder(name=LOCAL, host=None, slots=slots, healthy=True, info={}),
    )
    # Held to the commit: controllers starting together bring it up to date one at a time,
    # each seeing the interpreters the one before recorded (PostgreSQL; SQLite has one writer).
    builder = session.scalars(
        select(Builder)
        .where(Builder.name == LOCAL)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    builder.slots = slots
    probes = _cached_probes(builder, pythons)
    seen: dict[str, str] = {}
    for python, probe in probes.items():
        tag = f"{probe['python_tag']}-{probe['abi_tag']}"
        if tag in seen:
            raise ConfigError(f"pythons: {python!r} and {seen[tag]!r} are the same ABI ({tag})")
        seen[tag] = python
    try:
        walls = sandbox.choose(settings.sandbox)[1]
    except sandbox.SandboxError as exc:
        walls = f"none: {exc}"
    identity = next(iter(probes.values()), {}).get("os")  # jobspec.OS_KEYS: db.builder_os reads it
    if builder.info.get("sandbox") != walls or builder.info.get("os") != identity:
        builder.info = {**builder.info, "sandbox": walls, "os": identity}
    # After its OS is known: its ABIs' releases decide where our wheels cover them.
    set_pythons(session, builder, probes, farm_glibc(session, settings, builder, probes))
    return builder


def check_name(name: str) -> str:
    """A builder name: it names folders on the controller, so letters, digits and ._- only."""
    if not BUILDER_NAME.match(name):
        raise InputError(f"{name!r}: a builder name is letters, digits, '.', '_' and '-' (at most 64)")
    return name


def check_python(path: str) -> str:
    """An interpreter on a builder: a command name or an absolute path, nothing a shell would read."""
    if not PYTHON_PATH.match(path):
        raise InputError(f"--python {path!r}: not a plain command name or absolute path")
    return path


def register_remote(
    session: Session,
    *,
    name: str,
    host: str,
    port: int,
    user: str | None,
    key_file: str | None,
    host_key: str,
    slots: int,
    info: dict[str, Any],
    probes: dict[str, dict[str, Any]],
    glibc: Glibc = None,
) -> str:
    """Add or update an SSH builder with its probed interpreters: "added", "updated" or "unchanged"."""
    wanted = {
        "host": host,
        "port": port,
        "user": user,
        "key_file": key_file,
        "host_key": host_key,
        "slots": slots,
    }
    builder, made = get_or_make(
        session, Builder, Builder.name == name, lambda: Builder(name=name, healthy=True, info={}, **wanted)
    )
    if made:
        state = "added"
    else:
        old = {key: getattr(builder, key) for key in wanted}
        old_pythons = sorted((p.path, p.abi_id) for p in builder.pythons)
        state = "unchanged" if old == wanted else "updated"
        for key, value in wanted.items():
            setattr(builder, key, value)
    builder.info = {**builder.info, **info}
    builder.healthy = True
    builder.retry_at = None
    if glibc is None:  # no manylinux_glibc: the builders' oldest per platform, this one's included
        session.flush()
        glibc = glibc_by_platform(session, builder, [p["platform_tag"] for p in probes.values()])
    set_pythons(session, builder, probes, glibc)
    if state == "unchanged" and sorted((p.path, p.abi_id) for p in builder.pythons) != old_pythons:
        state = "updated"
    return state


def remove_builder(session: Session, name: str) -> None:
    builder = session.scalar(select(Builder).where(Builder.name == name))
    if builder is None:
        raise InputError(f"{name}: no such builder")
    session.delete(builder)
    session.flush()
    refresh_active(session)


def list_builders(session: Session) -> list[Builder]:
    return list(session.scalars(select(Builder).order_by(Builder.name)))
