from setuptools import Extension, setup

setup(name="import-note-ext", version="1.0", ext_modules=[Extension("import_note_ext", ["import_note_ext.c"])])
