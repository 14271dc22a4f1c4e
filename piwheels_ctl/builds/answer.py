"""What a build's answer says, read with care: its wheels proven against the job, its compiler
cache's figures, its load check, its log."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..abi import AbiTags
from ..errors import ArrivalError, VerifyError
from ..farm.executors import Outcome

if TYPE_CHECKING:
    from .verify import Wheel


def verify_answer(outcome: Outcome) -> list[Wheel]:
    """The wheels the agent reported, all of them proven against the job, or none.

    First every file must have arrived as the agent reported it (ArrivalError: the builder's
    fault); only then is each one's content checked (VerifyError: the project's fault), so one
    refused wheel refuses the whole build and a transfer fault is never blamed on the project.
    A tag that does not fit the job is blamed by the facts the agent reports (``tags.fault``).
    """
    from .tags import build_facts
    from .verify import check_arrival, inspect_wheel

    entries = outcome.result.get("files") or []
    if not entries:
        raise VerifyError("the build reported success but no wheel")
    arrived: list[tuple[Path, int, str]] = []
    for entry in entries:
        name = str(entry["name"])
        if Path(name).name != name or name in ("", ".", ".."):
            raise ArrivalError(f"{name!r}: a wheel name with path parts")
        path = outcome.outbox / name
        if path.is_symlink() or not path.is_file():
            raise ArrivalError(f"{name!r}: not a regular file in the outbox")
        if any(path == seen for seen, _size, _sha in arrived):
            raise ArrivalError(f"{name!r}: reported twice")
        size, sha256 = int(entry["size"]), str(entry["sha256"])
        check_arrival(path, size, sha256)
        arrived.append((path, size, sha256))
    parts = outcome.job.abi.split("-")
    if len(parts) != 3:
        raise VerifyError(f"job ABI {outcome.job.abi!r} is not python-abi-platform")
    abi = AbiTags(*parts)
    job = outcome.job
    deps = {str(e["name"]): e.get("deps") for e in entries if isinstance(e.get("deps"), list)}
    repaired = set(outcome.result.get("repaired") or ())
    facts = {
        str(e["name"]): dataclasses.replace(
            build_facts(abi, outcome.result.get("platform"), e.get("elf")), repaired=e["name"] in repaired
        )
        for e in entries
    }
    wheels = []
    for path, size, sha256 in arrived:
        wheel = inspect_wheel(
            path,
            name=job.name,
            version=job.version,
            abi=abi,
            size=size,
            sha256=sha256,
            facts=facts[path.name],
        )
        wheels.append(dataclasses.replace(wheel, deps=deps.get(path.name)))
    return wheels


def answered_ccache(result: dict[str, Any]) -> tuple[int, int] | None:
    """The (hits, misses) of the compiler cache the agent reports, if it reports sane ones."""
    counts = result.get("ccache")
    if not isinstance(counts, dict):
        return None
    hits, misses = counts.get("hits"), counts.get("misses")
    if type(hits) is not int or type(misses) is not int or hits < 0 or misses < 0 or hits + misses == 0:
        return None
    return hits, misses


def answered_load_check(result: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The (failures, notes) of the agent's load check of the build's wheels (``check_answer``
    has checked their shape)."""
    check = result.get("load_check") or {}
    return list(check.get("failures") or ()), list(check.get("notes") or ())


def read_log(path: Path) -> str:
    """The build's log as text (empty when it cannot be read)."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
