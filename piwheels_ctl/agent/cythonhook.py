"""Cython's own cache of the C it generates, switched on from outside the project.

A build's Python runs this at start as its ``sitecustomize`` (the agent puts a copy, named so,
in a folder of the build's own and names that folder in ``PYTHONPATH``; uv passes it on to the
build backend and everything it runs, pip replaces it). From then on every ``cythonize()`` the
build makes, directly or through ``Cython.Distutils`` or the ``cythonize`` command, and every
compile of the ``cython`` command or of ``Cython.Compiler.Main.compile()`` (Meson runs the
command; in-tree backends call either), caches its ``.pyx -> .c`` step in
``PIWHEELS_CYTHON_CACHE``, the project's own folder of the compiler cache, unless the project
says otherwise (``cache=...``, ``--annotate``). A project's ``force`` (or
``CYTHON_FORCE_REGEN=1``) is kept for what it is about, the project's own ``.c`` files: none of
them is taken as up to date, each one is generated again, but from the cache where the cache
has that very output (Cython would otherwise skip the cache altogether).

Cython keys each file by its Cython version, the contents of the file and of everything it
includes, and the options: what a rebuild gets from the cache is what Cython would have
generated. Cython hashes each file with its path, and a build's paths
are random (the unpacked sdist's folder, the build environment's with Cython's own ``.pxd``
files): here a file is hashed by its name and contents, which is what decides the C (as
Cython's options fingerprint says of its include paths). Cython before 3.1 is left alone.

The interpreter's own ``sitecustomize``, which this one hides, runs afterwards as it would have.

Shipped to builders with the rest of this folder; runs in build backends of Python 3.8 and later.
"""

import os
import sys

try:
    from typing import Tuple  # noqa: F401 - used in type comments
except ImportError:  # pragma: no cover
    pass

MODULE = "Cython.Build.Dependencies"
# The modules patched as they are imported: cythonize(), the cache's keys, the command's compile().
MODULES = (MODULE, "Cython.Build.Cache", "Cython.Compiler.Main")
CACHE = os.environ.get("PIWHEELS_CYTHON_CACHE", "")


def _version(text):
    # type: (str) -> Tuple[int, ...]
    """(major, minor) of a Cython version such as "3.1.0" or "3.2.0b1"."""
    numbers = []
    for part in text.split(".")[:2]:
        digits = ""
        for char in part:
            if not char.isdigit():
                break
            digits += char
        numbers.append(int(digits or 0))
    return tuple(numbers)


def file_hash(filename):
    # type: (str) -> str
    """A source file's key in the cache: its name and its contents, not the folder it is in."""
    import hashlib

    digest = hashlib.sha256(os.path.basename(filename).encode("utf-8") + b"\0")
    with open(filename, "rb") as source:
        for block in iter(lambda: source.read(65536), b""):
            digest.update(block)
    return digest.hexdigest()


def patch(module):
    # type: (object) -> None
    """Patch one of ``MODULES`` (Cython 3.1 and later): cythonize() and compile() get the cache
    folder as their default, the cache keys that do not depend on where the build runs."""
    cython = sys.modules.get("Cython")
    if not CACHE or _version(getattr(cython, "__version__", "0")) < (3, 1):
        return
    cache = sys.modules.get("Cython.Build.Cache")
    if cache is not None and hasattr(cache, "file_hash"):
        cache.file_hash = file_hash  # type: ignore[attr-defined]
    name = getattr(module, "__name__", "")
    if name == "Cython.Compiler.Main" and hasattr(module, "compile"):
        _patch_compile(module)
    if name != MODULE or not hasattr(module, "cythonize"):
        return
    original = module.cythonize

    def cythonize(*args, **kwargs):  # type: ignore[no-untyped-def]
        kwargs.setdefault("cache", CACHE)
        if len(args) > 5:  # force given by place: as it is
            return original(*args, **kwargs)
        force = kwargs.pop("force", None)
        if force is None:
            force = os.environ.get("CYTHON_FORCE_REGEN") == "1"
        if not force or not kwargs["cache"]:
            return original(*args, force=force, **kwargs)
        # force: no .c file counts as up to date (so each is generated again), and the cache,
        # which Cython leaves out under force, gives the ones it has.
        utils = sys.modules["Cython.Utils"]
        generated = utils.file_generated_by_this_cython
        utils.file_generated_by_this_cython = lambda path: False  # type: ignore[attr-defined]
        try:
            return original(*args, force=False, **kwargs)
        finally:
            utils.file_generated_by_this_cython = generated  # type: ignore[attr-defined]

    cythonize.__doc__ = original.__doc__
    cythonize.__wrapped__ = original  # type: ignore[attr-defined]
    module.cythonize = cythonize


def _patch_compile(main):
    # type: (object) -> None
    """``Cython.Compiler.Main.compile()``, which the ``cython`` command runs, caches by default."""
    original = main.compile  # type: ignore[attr-defined]
    options_class = main.CompilationOptions  # type: ignore[attr-defined]

    def compile(source, options=None, full_module_name=None, **kwds):  # type: ignore[no-untyped-def]
        options = options_class(defaults=options, **kwds)
        # Options Cython's cache refuses (NotImplementedError) or leaves out: as they are.
        refused = ("annotate", "common_utility_include_dir", "capi_reexport_cincludes")
        if not options.cache and not any(getattr(options, name, None) for name in refused):
            options.cache = CACHE
        return original(source, options, full_module_name)

    compile.__doc__ = original.__doc__
    compile.__wrapped__ = original  # type: ignore[attr-defined]
    main.compile = compile  # type: ignore[attr-defined]


class CythonCache:
    """A finder that lets the usual finders find Cython's cythonize module, then patches it as
    soon as it has run."""

    def find_spec(self, name, path=None, target=None):  # type: ignore[no-untyped-def]
        if name not in MODULES:
            return None
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec(name, path)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run = loader.exec_module

        def exec_module(module):  # type: ignore[no-untyped-def]
            run(module)
            patch(module)

        loader.exec_module = exec_module
        return spec


def _next_sitecustomize():
    # type: () -> None
    """Run the ``sitecustomize`` this one hides: the next one on ``sys.path``."""
    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        folder = os.path.abspath(entry or os.curdir)
        path = os.path.join(folder, "sitecustomize.py")
        if folder != here and os.path.isfile(path):
            with open(path) as source:
                code = compile(source.read(), path, "exec")
            exec(code, {"__name__": "sitecustomize", "__file__": path})  # noqa: S102 - the interpreter's own
            return


if CACHE:
    sys.meta_path.insert(0, CythonCache())
if __name__ == "sitecustomize":
    _next_sitecustomize()
