"""The registry of builders and the ABIs they build for."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from . import agent
from .errors import ConfigError
from .models import Abi, Builder, BuilderPython, File
from .recorder import add_coverage

AGENT = Path(agent.__file__)
LOCAL = "local"


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
    return result


def ensure_abi(session: Session, probe: dict[str, Any]) -> Abi:
    """The ABI row for a probed interpreter, created (and its coverage filled in) when new."""
    tag = f"{probe['python_tag']}-{probe['abi_tag']}-{probe['platform_tag']}"
    abi = session.scalar(select(Abi).where(Abi.tag == tag))
    if abi is None:
        abi = Abi(
            tag=tag,
            python_tag=probe["python_tag"],
            abi_tag=probe["abi_tag"],
            platform_tag=probe["platform_tag"],
            active=True,
        )
        session.add(abi)
        session.flush()
        for file in session.scalars(select(File).execution_options(yield_per=1000)):
            add_coverage(session, file, [abi])
    return abi


def refresh_active(session: Session) -> None:
    """An ABI is active while some builder has an interpreter for it."""
    has_python = exists().where(BuilderPython.abi_id == Abi.id)
    session.execute(update(Abi).values(active=has_python))


def set_pythons(session: Session, builder: Builder, probes: dict[str, dict[str, Any]]) -> None:
    """Make ``builder``'s interpreters exactly ``probes`` (path → probe result)."""
    wanted = {ensure_abi(session, probe).id: path for path, probe in probes.items()}
    for python in list(builder.pythons):
        if python.abi_id not in wanted:
            builder.pythons.remove(python)
        else:
            python.path = wanted.pop(python.abi_id)
    for abi_id, path in wanted.items():
        builder.pythons.append(BuilderPython(abi_id=abi_id, path=path))
    session.flush()
    refresh_active(session)


def _cached_probes(builder: Builder, pythons: list[str]) -> dict[str, dict[str, Any]]:
    """Probe each interpreter, reusing the last answer while its executable is unchanged."""
    cache: dict[str, Any] = dict(builder.info.get("probes", {}))
    probes: dict[str, dict[str, Any]] = {}
    for python in pythons:
        path = shutil.which(python)
        stamp = os.stat(path).st_mtime_ns if path else None
        entry = cache.get(python)
        if entry is None or entry.get("stamp") != stamp:
            entry = {"stamp": stamp, "probe": probe_local(python)}
            cache[python] = entry
        probes[python] = entry["probe"]
    builder.info = {**builder.info, "probes": {k: cache[k] for k in pythons}}
    return probes


def ensure_local(session: Session, pythons: list[str], slots: int) -> Builder:
    """The builder that is this machine, with the configured interpreters and slots."""
    builder = session.scalar(select(Builder).where(Builder.name == LOCAL))
    if builder is None:
        builder = Builder(name=LOCAL, host=None, slots=slots, healthy=True, info={})
        session.add(builder)
    builder.slots = slots
    probes = _cached_probes(builder, pythons)
    seen: dict[str, str] = {}
    for python, probe in probes.items():
        tag = f"{probe['python_tag']}-{probe['abi_tag']}"
        if tag in seen:
            raise ConfigError(f"pythons: {python!r} and {seen[tag]!r} are the same ABI ({tag})")
        seen[tag] = python
    set_pythons(session, builder, probes)
    return builder
