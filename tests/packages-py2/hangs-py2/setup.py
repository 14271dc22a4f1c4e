import subprocess
import sys

from setuptools import setup

if "bdist_wheel" in sys.argv:  # the build itself, not its metadata step
    if sys.version_info[0] == 2:
        subprocess.call(["sleep", "100000.2931"])  # never finishes on 2.7 (the number: to find it)
    else:
        sys.exit("hangs-py2 fails at once on Python 3: it hangs on Python 2.7 only")

setup(name="hangs-py2", version="1.0", py_modules=["hangs_py2"])
