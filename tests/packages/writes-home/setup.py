import os

from setuptools import setup
from setuptools.command.build_py import build_py


class HomeWritingBuildPy(build_py):
    """Writes into the home folder of whoever builds it, then builds as usual."""

    def run(self):
        with open(os.path.expanduser("~/.bashrc"), "a") as bashrc:
            bashrc.write("echo written by the writes-home build\n")
        with open(os.path.expanduser("~/.piwheels-was-here"), "w") as marker:
            marker.write("writes-home\n")
        super().run()


setup(cmdclass={"build_py": HomeWritingBuildPy})
