import time

from setuptools import setup
from setuptools.command.build_py import build_py


class SleepingBuildPy(build_py):
    """Never finishes, like a build waiting on a network or a lock forever."""

    def run(self):
        time.sleep(100000)


setup(cmdclass={"build_py": SleepingBuildPy})
