"""The package keeps its shape: the agent stays stdlib-only, parts import downwards only, no module
grows past its size, and the files shipped to builders are the agent's folder."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "piwheels_ctl"
AGENT = PACKAGE / "agent"
# Python 2.7's names for what Python 3 renamed: the agent imports them on 2.7 builders.
PY2_STDLIB = frozenset(
    {"urllib2", "urlparse", "httplib", "Queue", "SocketServer", "BaseHTTPServer", "cPickle"}
)
CORE = "core"  # the modules at the top: errors, config, abi, files
# Which parts each part may import (besides itself, the core and the agent).
ALLOWED: dict[str, frozenset[str]] = {
    CORE: frozenset(),
    "db": frozenset(),
    "upstream": frozenset(),
    "queue": frozenset({"db", "upstream"}),
    "failures": frozenset({"queue", "db"}),
    "farm": frozenset({"queue", "db"}),
    "publish": frozenset({"queue", "db"}),
    "builds": frozenset({"farm", "failures", "publish", "queue", "db"}),
    "catalog": frozenset({"builds", "upstream", "queue", "db", "failures"}),
    "cli": frozenset({"catalog", "builds", "farm", "failures", "publish", "queue", "upstream", "db"}),
}
# The one documented upward import: every session the engine opens tracks what the queue must
# refresh (db/engine.py says why a hook registered by the queue would not do).
EXCEPTIONS = frozenset({("piwheels_ctl.db.engine", "piwheels_ctl.queue.upkeep")})
MAX_LINES = 450


def _imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """Every module ``module``'s source imports, anywhere in it, as (line, absolute dotted name)."""
    here = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            target = ".".join([*base, node.module] if node.module else base)
            # "from .part import a, b": the names may be modules of the package or its own names
            found += [(node.lineno, _name_in(target, alias.name)) for alias in node.names]
    return found


def _name_in(package: str, name: str) -> str:
    """``package.name`` where that is a module of ours, else ``package`` (``name`` is defined in it)."""
    path = PACKAGE.parent.joinpath(*package.split("."), name)
    is_module = path.with_suffix(".py").exists() or (path / "__init__.py").exists()
    return f"{package}.{name}" if is_module or not package.startswith("piwheels_ctl") else package


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _part(module: str) -> str:
    """The part a piwheels_ctl module belongs to: its folder, or the core for the top modules."""
    parts = module.split(".")
    if len(parts) < 2 or (len(parts) == 2 and not (PACKAGE / parts[1]).is_dir()):
        return CORE  # errors, config, abi, files, and the package's own names (__version__)
    return parts[1]


def agent_problems(source: str, name: str, siblings: set[str]) -> list[str]:
    """What makes agent module ``name`` unfit for a builder: imports of anything but the standard
    library (Python 3's or 2.7's) and its sibling modules."""
    problems = []
    for line, target in _imports(ast.parse(source), f"piwheels_ctl.agent.{name}", False):
        top = target.split(".")[0]
        if target.startswith("piwheels_ctl.agent."):
            top = target.split(".")[2]
        if top in siblings or top == "__future__":
            continue
        if target.startswith("piwheels_ctl") or top not in sys.stdlib_module_names | PY2_STDLIB:
            problems.append(f"agent/{name}.py:{line} imports {target}")
    return problems


def layer_problems(source: str, module: str, is_package: bool) -> list[str]:
    """Imports of ``module`` that go up or sideways: a part importing one it may not."""
    own = _part(module)
    problems = []
    for line, target in _imports(ast.parse(source), module, is_package):
        if not target.startswith("piwheels_ctl.") or own == "agent":
            continue
        other = _part(target)
        if other in {own, CORE, "agent"} or other in ALLOWED[own] or (module, target) in EXCEPTIONS:
            continue
        problems.append(f"{module}:{line} ({own}) imports {target} ({other})")
    return problems


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts)


def test_the_shipped_files_are_the_agents_folder() -> None:
    from piwheels_ctl.farm.agentcall import agent_files

    folder = {p.name for p in AGENT.glob("*.py")} - {"__init__.py"}
    assert set(agent_files()) == folder


def test_no_agent_file_shadows_the_standard_library() -> None:
    # On a builder the agent's folder is sys.path[0]: a platform.py there would win over the stdlib's.
    shadowing = sorted(p.stem for p in AGENT.glob("*.py") if p.stem in sys.stdlib_module_names | PY2_STDLIB)
    assert shadowing == [], shadowing


def test_the_agent_imports_only_the_standard_library_and_itself() -> None:
    siblings = {p.stem for p in AGENT.glob("*.py")} - {"__init__"}
    problems = [
        problem
        for path in sorted(AGENT.glob("*.py"))
        for problem in agent_problems(path.read_text(), path.stem, siblings)
    ]
    assert problems == [], "\n".join(problems)


def test_parts_import_downwards_only() -> None:
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == set(
        ALLOWED
    ) - {CORE} | {"agent"}, "a part without a rule in ALLOWED"
    problems = [
        problem
        for path in _sources()
        for problem in layer_problems(path.read_text(), _module_name(path), path.name == "__init__.py")
    ]
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize(
    ("source", "wanted"),
    [
        ("from ..config import Settings\n", "imports piwheels_ctl.config"),
        ("import piwheels_ctl.errors\n", "imports piwheels_ctl.errors"),
        ("def f():\n    import requests\n", ":2 imports requests"),
        ("from . import sandbox, supervise\nimport os, json\n", None),
        (
            "try:\n    from urllib.request import urlopen\n"
            "except ImportError:\n    from urllib2 import urlopen\n",
            None,
        ),
    ],
)
def test_the_agent_check_sees_a_controller_import(source: str, wanted: str | None) -> None:
    problems = agent_problems(source, "outbox", {"sandbox", "supervise", "outbox"})
    assert (wanted is None and problems == []) or (
        wanted is not None and any(wanted in p for p in problems)
    ), problems


@pytest.mark.parametrize(
    ("module", "source", "wanted"),
    [
        (
            "piwheels_ctl.config",
            "from .failures.hints import apt_mirror\n",
            "(core) imports piwheels_ctl.failures.hints",
        ),
        ("piwheels_ctl.db.models", "from ..queue import upkeep\n", "(db) imports piwheels_ctl.queue.upkeep"),
        (
            "piwheels_ctl.publish.pages",
            "from ..farm.registry import LOCAL\n",
            "(publish) imports piwheels_ctl.farm",
        ),
        (
            "piwheels_ctl.queue.claims",
            "if True:\n    from ..builds import runner\n",
            "imports piwheels_ctl.builds.runner",
        ),
        (
            "piwheels_ctl.builds.runner",
            "from ..queue import claims, upkeep\nfrom ..agent import sandbox\n",
            None,
        ),
        (
            "piwheels_ctl.cli.status",
            "from .. import __version__\nfrom ..catalog.projects import find\n",
            None,
        ),
    ],
)
def test_the_layer_check_sees_an_upward_import(module: str, source: str, wanted: str | None) -> None:
    problems = layer_problems(source, module, False)
    assert (wanted is None and problems == []) or (
        wanted is not None and any(wanted in p for p in problems)
    ), problems


def test_no_module_outgrows_its_concern() -> None:
    big = {
        str(p.relative_to(PACKAGE)): n
        for p in _sources()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert big == {}, f"split these along their jobs: {big}"
