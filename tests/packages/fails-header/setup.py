from setuptools import Extension, setup

setup(ext_modules=[Extension("fails_header", ["fails_header.c"])])
