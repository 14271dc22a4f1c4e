"""Probe this builder's interpreter or build one sdist, and print the answer as one JSON line.

    python agent.py probe
    python agent.py build --python PY --name NAME --version V --outbox DIR --log FILE ...

The agent prints that one line whatever happens. The options of ``build`` are ``jobspec``'s
(the build itself is ``buildstep``'s). The controller sends every module of this folder
(``MODULES``) flat into one folder of the builder; the builder role's sudo rule names this file
as ``agent/agent.py``. Stdlib-only, Python 2.7 and 3.4+, type comments only.
"""

from __future__ import absolute_import, division, print_function

import argparse
import json
import os
import sys

if __package__:  # the local builder: imported as part of piwheels_ctl
    from . import buildplatform, buildstep, crossbuild, jobspec, outbox, sandbox
else:  # on a builder: the files sent beside this one
    import buildplatform  # type: ignore[import-not-found, no-redef]
    import buildstep  # type: ignore[import-not-found, no-redef]
    import crossbuild  # type: ignore[import-not-found, no-redef]
    import jobspec  # type: ignore[import-not-found, no-redef]
    import outbox  # type: ignore[import-not-found, no-redef]
    import sandbox  # type: ignore[import-not-found, no-redef]

try:
    from typing import Any, Dict, List, Optional  # noqa: F401 - used in type comments
except ImportError:  # pragma: no cover - Python 2.7/3.4 builders without typing
    pass

HERE = os.path.dirname(os.path.abspath(__file__))
# The files the controller sends to a builder: every module here (on a builder, this folder holds
# exactly the files sent).
MODULES = tuple(sorted(name for name in os.listdir(HERE) if name.endswith(".py") and name != "__init__.py"))


def probe():
    # type: () -> Dict[str, Any]
    """What the controller asks of a builder's interpreter: its tags and platform, and the
    digests of the agent's files here (so the controller knows when to send them again)."""
    result = buildplatform.describe()
    result["python"] = sandbox.canonical_python(sys.executable)  # the path builds run it by
    result["modules"] = dict((name, outbox.sha256_file(os.path.join(HERE, name))) for name in MODULES)
    return result


def main(argv=None):
    # type: (Optional[List[str]]) -> int
    parser = argparse.ArgumentParser(prog="agent.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("probe", help="print this interpreter's wheel tags and the sandbox as JSON")
    p.add_argument("--sandbox", choices=jobspec.SANDBOX_CHOICES, default="auto")
    p.add_argument("--cross", choices=sorted(crossbuild.TARGETS), help="the tags this builder cross-builds")
    b = sub.add_parser("build", help="build one sdist and print the result as JSON")
    jobspec.add_arguments(b)
    args = parser.parse_args(argv)
    if args.command == "probe":
        result = probe()
        if args.cross:  # the target's tags and the cross mark; the builder's own OS stays
            try:
                result.update(crossbuild.describe(sys.executable, args.cross))
            except crossbuild.CrossError as exc:
                result = outbox.builder_error("cross: %s" % (exc,))
        kind = None
        try:
            kind, result["sandbox"] = sandbox.choose(args.sandbox)
        except sandbox.SandboxError as exc:
            result["sandbox"] = "none: %s" % (exc,)
        if kind and os.geteuid() == 0:  # builds run as a uid of their own: can it run this interpreter?
            unreadable = sandbox.unreadable_by_builds(result["python"], kind, os.path.dirname(os.__file__))
            if unreadable:
                result["unreadable"] = "%s (%s)" % (unreadable, sandbox.UNREADABLE_FIX)
    elif args.command == "build":
        result = buildstep.build(jobspec.from_args(args))
    else:
        parser.print_usage(sys.stderr)
        return 2
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # the controller reads one JSON line whatever happens
        sys.stdout.write(json.dumps(outbox.builder_error("agent: %r" % (exc,))) + "\n")
        sys.exit(1)
