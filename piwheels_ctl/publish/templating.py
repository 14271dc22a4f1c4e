"""The Jinja environments every page of the site is rendered with (``templates/``), in one place.

Two, from the same settings but one: a page or index file keeps its template's last newline;
a fragment that is put inside a page (a chart's SVG) drops it, as the page expects.
"""

from __future__ import annotations

from jinja2 import Environment, PackageLoader

from ..files import human_size

_LOADER = PackageLoader("piwheels_ctl.publish", "templates")


def _environment(*, keep_trailing_newline: bool) -> Environment:
    environment = Environment(
        loader=_LOADER,
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=keep_trailing_newline,
    )
    environment.filters["filesize"] = human_size
    return environment


# Whole files: the pages for people, the simple index, the statistics.
templates = _environment(keep_trailing_newline=True)
# Pieces of a page: the statistics page's charts.
fragments = _environment(keep_trailing_newline=False)
