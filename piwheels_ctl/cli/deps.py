"""``piwheels-ctl deps``: which apt packages a project's wheels need on a Pi."""

from __future__ import annotations

import json

import click
from packaging.version import InvalidVersion
from packaging.version import parse as parse_version

from ..catalog.projects import find
from ..errors import InputError
from ..failures.runtime_deps import needs, newest_with_wheels
from . import App, cli, pass_app


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
        try:
            project, versions = find(session, name)
        except InputError:
            raise InputError(f"deps: no project {name!r}") from None
        release = newest_with_wheels(versions, version)
        if release is None:
            raise InputError(f"deps: {spec} has no wheels")
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
