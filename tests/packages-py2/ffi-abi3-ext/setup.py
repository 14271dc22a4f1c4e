import sys

from setuptools import Extension, setup

# A C extension linking the OS release's libffi (outside every manylinux policy): built on Debian
# bullseye it needs libffi.so.7, which bookworm (libffi.so.8) does not have. On Python 3 it uses
# the limited API (one cp38-abi3 wheel for every later Python); on 2.7 it is a plain cp27 one.
if sys.version_info[0] >= 3:
    extension = Extension(
        "ffi_abi3_ext",
        ["ffi_abi3_ext.c"],
        libraries=["ffi"],
        py_limited_api=True,
        define_macros=[("Py_LIMITED_API", "0x03080000")],
    )
    options = {"bdist_wheel": {"py_limited_api": "cp38"}}
else:
    extension = Extension("ffi_abi3_ext", ["ffi_abi3_ext.c"], libraries=["ffi"])
    options = {}
setup(name="ffi-abi3-ext", version="1.0", ext_modules=[extension], options=options)
