"""The root index (PEP 503 HTML and PEP 691 JSON): written whole from a stream of projects, or
patched a few lines at a time; either way streamed, in bounded memory, and replaced atomically.

Both files hold one line per project, sorted by canonical name, between a head and a tail: a
patch copies the old file line by line, dropping and inserting the lines of the changed names.
"""

from __future__ import annotations

import bisect
import json
import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import SimpleNamespace

from packaging.utils import canonicalize_name

from ..files import replacing
from .templating import templates

HTML = "index.html"
JSON = "index.json"
_HTML_LINE = re.compile(r'    <a href="([a-z0-9-]+)/">')
_HTML_TAIL = "  </body>\n"
_JSON_TAIL = "]}\n"
_CANONICAL_KEY = "_name"
BLOCK = 1 << 20  # what a patch reads at a time


def _json_head(api_version: str) -> str:
    return json.dumps({"meta": {"api-version": api_version}}, separators=(",", ":"))[:-1] + ',"projects":[\n'


def _json_line(name: str, display_name: str) -> str:
    """A project's entry; one whose display name is not a spelling of its name also carries the
    name (a private key, PEP 691), which the file is sorted by."""
    entry = {"name": display_name}
    if canonicalize_name(display_name) != name:
        entry[_CANONICAL_KEY] = name
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


def _html_line(api_version: str) -> Callable[[str, str], str]:
    module = templates.get_template("simple_root.html.j2").make_module({"api_version": api_version})
    link = module.link  # type: ignore[attr-defined]  # the template's macro: one project's line
    return lambda name, display: str(link(SimpleNamespace(name=name, display_name=display)))


def write(simple: Path, projects: Iterable[tuple[str, str]], api_version: str) -> bool:
    """Write both root files from ``projects`` ((canonical name, display name), sorted by name,
    read once as they stream in); whether either file's bytes changed."""
    simple.mkdir(parents=True, exist_ok=True)
    template = templates.get_template("simple_root.html.j2")
    html_line = _html_line(api_version)
    with replacing(simple / HTML) as html, replacing(simple / JSON) as js:
        html.write(
            template.render(api_version=api_version, projects=[]).removesuffix(_HTML_TAIL + "</html>\n")
        )
        js.write(_json_head(api_version))
        first = True
        for name, display in projects:
            html.write(html_line(name, display))
            js.write(("" if first else ",\n") + _json_line(name, display))
            first = False
        html.write(_HTML_TAIL + "</html>\n")
        js.write(("" if first else "\n") + _JSON_TAIL)
    return html.changed or js.changed


def patch(simple: Path, changes: Mapping[str, str | None], api_version: str) -> bool | None:
    """Set the line of each changed name (to its display name; None: no line), keeping the rest
    of both files as they are; whether either changed. None when a file is missing or not in
    the form ``write`` gives it (an older piwheels-ctl's): then it must be written whole."""
    html_path, json_path = simple / HTML, simple / JSON
    try:
        with open(html_path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 64))
            html_ok = f.read().endswith(f"\n{_HTML_TAIL}</html>\n".encode())
        with open(json_path, encoding="utf-8") as f:
            json_ok = f.readline() == _json_head(api_version)
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    if not (html_ok and json_ok):
        return None
    html_line = _html_line(api_version)
    html_changed = _patch(html_path, changes, _html_key, html_line, tail=_HTML_TAIL, comma=False)
    json_changed = _patch(json_path, changes, _json_key, _json_line, tail=_JSON_TAIL, comma=True)
    return html_changed or json_changed


def without_page(simple: Path) -> dict[str, list[str]]:
    """The projects a root file lists whose page of the same kind (``index.html`` for the HTML
    root, ``index.json`` for the JSON one) is not on disk, where pip gets a 404: name -> those
    root files. Streamed, and read twice: a page that a publish removed after the root it
    replaced was read is not one."""

    def missing() -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for filename, key_of in ((HTML, _html_key), (JSON, _json_key)):
            if not (simple / filename).is_file():
                continue  # replaced atomically: never missing once written
            with open(simple / filename, encoding="utf-8") as root:
                for line in root:
                    name = key_of(line)
                    if name is not None and not (simple / name / filename).is_file():
                        found.setdefault(name, []).append(filename)
        return found

    first = missing()
    again = missing() if first else {}
    return {name: again[name] for name in sorted(first) if name in again}


def _html_key(line: str) -> str | None:
    match = _HTML_LINE.match(line)
    return match.group(1) if match else None


def _json_key(line: str) -> str | None:
    if not line.startswith('{"name":'):
        return None
    entry = json.loads(line.rstrip().removesuffix(","))
    return str(entry.get(_CANONICAL_KEY) or canonicalize_name(entry["name"]))


def _patch(
    path: Path,
    changes: Mapping[str, str | None],
    key_of: Callable[[str], str | None],
    render: Callable[[str, str], str],
    *,
    tail: str,
    comma: bool,
) -> bool:
    """Copy ``path`` with the changed names' lines dropped and their new ones merged in by name.

    Read a block of lines at a time: a block of project lines that holds no changed name and
    is not where a new line goes is copied whole, its keys unread but its first and last."""
    pending = deque(sorted((name, display) for name, display in changes.items() if display is not None))
    changed = sorted(changes)
    with open(path, encoding="utf-8") as old, replacing(path) as new:
        held: str | None = None  # the last project line, until the next shows whether a comma follows

        def put(entry: str) -> None:
            nonlocal held
            if held is not None:
                new.write(held + (",\n" if comma else "\n"))
            held = entry.rstrip("\n").removesuffix(",") if comma else entry.rstrip("\n")

        def untouched(block: list[str]) -> bool:
            first, last = key_of(block[0]), key_of(block[-1])
            if first is None or last is None or (pending and pending[0][0] <= last):
                return False
            # Sorted lines between two project lines are all project lines.
            at = bisect.bisect_left(changed, first)
            return not (at < len(changed) and changed[at] <= last)

        while block := old.readlines(BLOCK):
            if untouched(block):
                put(block[0])
                if len(block) > 1:  # the lines between the first and last, as they were
                    new.write(f"{held}{',' if comma else ''}\n{''.join(block[1:-1])}")
                    held = None
                    put(block[-1])
                continue
            for line in block:
                key = key_of(line)
                if key is not None:
                    while pending and pending[0][0] < key:
                        put(render(*pending.popleft()))
                    if key not in changes:
                        put(line)
                elif line == tail:
                    while pending:
                        put(render(*pending.popleft()))
                    if held is not None:
                        new.write(held + "\n")
                        held = None
                    new.write(line)
                else:
                    new.write(line)  # the head, and what follows the tail
    return new.changed
