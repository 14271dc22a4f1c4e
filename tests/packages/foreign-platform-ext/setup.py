from setuptools import Extension, setup

setup(ext_modules=[Extension("foreign_platform_ext", ["foreign_platform_ext.c"])])
