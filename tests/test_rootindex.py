"""The root index patched a few lines at a time is, byte for byte, the root written whole."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from piwheels_ctl.publish import rootindex
from piwheels_ctl.publish.simple import API_VERSION


def _display(rng: random.Random, name: str) -> str:
    """A spelling of ``name``, or a display name that is not one (escaped, carrying the name)."""
    return rng.choice([name.upper(), name.replace("-", "_"), f'Other<"&>{name}'])


def _files(simple: Path) -> tuple[bytes, bytes]:
    return (simple / rootindex.HTML).read_bytes(), (simple / rootindex.JSON).read_bytes()


# Blocks of a line (each copied whole or not), of a few lines, and of the whole file.
@pytest.mark.parametrize("block", [1, 300, rootindex.BLOCK])
@pytest.mark.parametrize("seed", range(12))
def test_a_patch_gives_what_writing_the_whole_root_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int, seed: int
) -> None:
    rng = random.Random(seed)
    universe = [f"p-{n:04d}" for n in range(400)]
    before = {name: _display(rng, name) for name in rng.sample(universe, rng.choice([0, 1, 2, 150]))}
    changes: dict[str, str | None] = {}
    touched = rng.sample(universe, rng.choice([1, 2, 5, 40]))
    touched += rng.sample(sorted(before), min(len(before), 5))
    for name in touched:  # new, renamed (or spelled the same), or gone
        changes[name] = None if name in before and rng.random() < 0.5 else _display(rng, name)
    if seed == 0:
        changes = dict.fromkeys(before)  # every project goes
    after = {name: display for name, display in {**before, **changes}.items() if display is not None}
    patched, whole = tmp_path / "patched", tmp_path / "whole"
    rootindex.write(patched, sorted(before.items()), API_VERSION)
    rootindex.write(whole, sorted(after.items()), API_VERSION)
    old = _files(patched)
    monkeypatch.setattr(rootindex, "BLOCK", block)
    changed = rootindex.patch(patched, changes, API_VERSION)
    assert _files(patched) == _files(whole), f"patched {sorted(changes.items())} into {sorted(before)}"
    assert changed is (old != _files(whole)), (changed, sorted(changes.items()))
