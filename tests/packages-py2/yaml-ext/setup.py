from setuptools import Extension, setup

setup(name="yaml-ext", version="1.0", ext_modules=[Extension("yaml_ext", ["yaml_ext.c"], libraries=["yaml"])])
