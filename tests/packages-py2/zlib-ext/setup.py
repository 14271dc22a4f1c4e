from setuptools import Extension, setup

setup(name="zlib-ext", version="1.0", ext_modules=[Extension("zlib_ext", ["zlib_ext.c"], libraries=["z"])])
