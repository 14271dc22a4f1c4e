from setuptools import Extension, setup

# Linked as every Python extension is on Linux: undefined symbols allowed, left to the loader.
setup(name="undefined-symbol-ext", version="1.0",
      ext_modules=[Extension("undefined_symbol_ext", ["undefined_symbol_ext.c"])])
