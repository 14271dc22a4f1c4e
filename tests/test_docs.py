"""The docs stay true to the code: the settings table is ``Settings`` key for key, and no link is dead."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic_core import PydanticUndefined

from piwheels_ctl.config import Settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - older controllers only
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# [text](target) and ![alt](target); the target ends at whitespace or the closing parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)[^)]*\)")
ROW = re.compile(r"^\|\s*`([a-z_]+)`\s*\|(.*)\|(.*)\|\s*$")


def _settings_table() -> dict[str, str]:
    """Key -> default cell of docs/configuration.md's table (the one headed key | default | meaning)."""
    lines = (ROOT / "docs" / "configuration.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"^\|\s*key\s*\|\s*default\s*\|", line))
    rows: dict[str, str] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        match = ROW.match(line)
        assert match, f"not a row of three cells, the key in backticks: {line}"
        key = match.group(1)
        assert key not in rows, f"{key}: listed twice"
        rows[key] = match.group(2).strip()
    return rows


def test_the_settings_table_lists_every_setting_and_only_those() -> None:
    assert sorted(_settings_table()) == sorted(Settings.model_fields)


def _documented(cell: str) -> Any:
    """The TOML value a default cell starts with (`"auto"`, `3600`, `[]`), or None when it
    starts with words (a default the machine decides, or none)."""
    match = re.match(r"^`([^`]*)`", cell)
    if match is None:
        return None
    return tomllib.loads(f"value = {match.group(1)}")["value"]


@pytest.mark.parametrize("key", sorted(Settings.model_fields))
def test_the_settings_table_gives_each_default(key: str) -> None:
    cell = _settings_table()[key]
    field = Settings.model_fields[key]
    if field.default is None:
        assert cell.startswith("none"), f"{key}: unset by default, the table says {cell!r}"
        return
    documented = _documented(cell)
    if field.default is PydanticUndefined:  # a factory: a machine's value ([] where it is plain)
        if documented is not None:
            assert documented == field.get_default(call_default_factory=True), f"{key}: {cell!r}"
        return
    assert documented is not None, f"{key}: the default {field.default!r} is not given as a value"
    default = str(field.default) if isinstance(field.default, Path) else field.default
    assert documented == default, f"{key}: the table says {documented!r}, Settings {default!r}"


def _links() -> list[tuple[Path, str]]:
    found = []
    for doc in DOCS:
        text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.DOTALL)  # code is not links
        found += [(doc, target) for target in LINK.findall(text)]
    return found


def test_every_doc_is_linked_from_the_readme_index() -> None:
    readme = {target.split("#")[0] for doc, target in _links() if doc.name == "README.md"}
    missing = [f"docs/{doc.name}" for doc in DOCS[1:] if f"docs/{doc.name}" not in readme]
    assert not missing, f"README.md links none of {missing}"


def _anchors(doc: Path) -> set[str]:
    """The fragments a Markdown page's headings get (GitHub's spelling)."""
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.DOTALL)
    headings = re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: str(doc.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file(doc: Path) -> None:
    dead = []
    for source, target in _links():
        if source != doc or re.match(r"^[a-z]+:", target):
            continue  # a URL
        name, _, fragment = target.partition("#")
        path = (doc.parent / name).resolve() if name else doc
        missing = not path.exists()
        if missing or (fragment and path.suffix == ".md" and fragment not in _anchors(path)):
            dead.append(target)
    assert not dead, f"{doc.relative_to(ROOT)}: links to nothing: {dead}"


def test_the_architecture_names_every_module_in_its_part() -> None:
    """A module added or moved shows in the row of its folder in docs/architecture.md's parts."""
    rows: dict[str, str] = {}
    for line in (ROOT / "docs" / "architecture.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 3:
            folder = re.match(r"^`([a-z_]+)/`$", cells[0])
            rows[folder.group(1) if folder else cells[0]] = cells[2]
    package = ROOT / "piwheels_ctl"
    unnamed = []
    for path in sorted(package.rglob("*.py")):
        part = path.relative_to(package).parts
        if "migrations" in part or (path.name == "__init__.py" and part[0] != "cli"):
            continue
        row = rows.get(part[0] if len(part) > 1 else "top (core)", "")
        if f"`{path.name}`" not in row:
            unnamed.append("/".join(part))
    assert not unnamed, f"docs/architecture.md's table of parts does not name {unnamed}"
