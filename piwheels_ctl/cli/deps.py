"""``piwheels-ctl deps``: which apt packages a project's wheels need on a Pi."""

from __future__ import annotations

import json
from typing import Any

import click
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion
from packaging.version import parse as parse_version
from sqlalchemy import select

from ..db.models import File, Project, Version
from ..errors import InputError
from . import App, cli, pass_app

# Packages every Debian system has (C library, compiler runtime): not worth an apt line.
ALWAYS_THERE = frozenset({"libc6", "libgcc-s1", "libgcc1"})


def needs(files: list[File]) -> dict[str, Any]:
    """The apt packages (and libraries without a known package) that ``files`` need at run time."""
    packages: dict[str, set[str]] = {}
    unknown: set[str] = set()
    for file in files:
        for dep in file.deps or []:
            package, library = dep.get("package"), str(dep.get("library"))
            if package is None:
                unknown.add(library)
            elif package not in ALWAYS_THERE:
                packages.setdefault(str(package), set()).add(library)
    names = sorted(packages)
    return {
        "packages": [{"package": p, "libraries": sorted(packages[p])} for p in names],
        "unknown_libraries": sorted(unknown),
        "apt": f"sudo apt install {' '.join(names)}" if names else None,
        "files": [{"filename": f.filename, "deps": f.deps} for f in files],
    }


@cli.command()
@click.argument("spec", metavar="NAME[==VERSION]")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def deps(app: App, spec: str, as_json: bool) -> None:
    """Print the apt packages a project's wheels need on a Pi (the sudo apt install line).

    For the newest version with wheels, or VERSION: the libraries their compiled modules link
    and do not contain, as the builders' Debian packages provide them."""
    name, _, wanted = spec.partition("==")
    try:
        version = str(parse_version(wanted)) if wanted.strip() else None
    except InvalidVersion:
        raise InputError(f"deps: {wanted!r} is not a version (in {spec!r})") from None
    with app.session() as session:
        project = session.scalar(select(Project).where(Project.name == canonicalize_name(name)))
        if project is None:
            raise InputError(f"deps: no project {name!r}")
        query = select(Version).where(Version.project_id == project.id)
        releases = [r for r in session.scalars(query) if r.files and version in (None, r.version)]
        if not releases:
            raise InputError(f"deps: {spec} has no wheels")
        release = max(releases, key=lambda r: parse_version(r.version))
        result = {"name": project.name, "version": release.version, **needs(list(release.files))}
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    # Plain lines, never wrapped: the apt line is for copying into a terminal.
    for file in result["files"]:
        libraries = ", ".join(f"{d['library']} ({d.get('package') or '?'})" for d in file["deps"] or [])
        click.echo(f"{file['filename']}: {libraries or 'no system libraries'}")
    if result["unknown_libraries"]:
        click.echo(f"no Debian package known for {', '.join(result['unknown_libraries'])}")
    click.echo(result["apt"] or f"{project.name} {release.version}: nothing to install with apt")
