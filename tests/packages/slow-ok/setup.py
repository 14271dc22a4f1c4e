import time

from setuptools import setup
from setuptools.command.build_py import build_py


class SlowBuildPy(build_py):
    """Takes a few seconds, long enough for a test to break something mid-build."""

    def run(self):
        time.sleep(5)
        build_py.run(self)


setup(cmdclass={"build_py": SlowBuildPy})
