"""Rows of the failure rules for what a project says in its own words: a message that names what
to install, a ``setup.py`` that builds only on the board it looks for, and a build backend newer
than the project's configuration. Each with a real log line (the farm's own builds of real
sdists, bench/failing_sample.py); the same format as ``rules.RULES``, which ends with these.
"""

from __future__ import annotations

from .rules import Rule

WORD_RULES: tuple[Rule, ...] = (
    # --- Messages that say in plain words what is missing.
    Rule(  # mysqlclient: the first name it tried is what to install
        "missing-pkg-config",
        r"Can not find valid pkg-config name\.?.*\n(?:.*\n){0,6}?.*pkg-config --exists (?P<detail>[\w.+-]+)",
        "Exception: Can not find valid pkg-config name.\nSpecify MYSQLCLIENT_CFLAGS and MYSQLCLIENT_LDFLAGS"
        " env"
        " vars manually\nTrying pkg-config --exists mysqlclient",
        "mysqlclient",
    ),
    Rule(
        "missing-pkg-config",
        r"Command '?pkg-config --exists (?P<detail>[\w.+-]+)'? returned non-zero",
        "Command 'pkg-config --exists mysqlclient' returned non-zero exit status 1.",
        "mysqlclient",
    ),
    Rule(  # python-prctl 1.8.1
        "missing-dev-package",
        r"You need to install (?P<detail>[\w.+-]+) (?:development headers|headers|development files|-dev)",
        "You need to install libcap development headers to build this module",
        "libcap",
    ),
    Rule(  # evdev: "The 'linux/input.h' and 'linux/input-event-codes.h' include files are missing."
        "missing-header",
        r"The '(?P<detail>[\w./+-]+\.h)'(?: and '[^']+')? include files? (?:is|are) missing",
        "The 'linux/input.h' and 'linux/input-event-codes.h' include files are missing.",
        "linux/input.h",
    ),
    Rule(  # PyYAML 5.4.1 and other Cython 0.x setups under Cython 3
        "cython3-incompatible",
        r"'build_ext' object has no attribute 'cython_sources'",
        "AttributeError: 'build_ext' object has no attribute 'cython_sources'",
    ),
    Rule(  # mpi4py 3.1.6: distutils' dry_run, gone from setuptools >= 80
        "setuptools-too-new",
        r"got an unexpected keyword argument '(?P<detail>dry_run)'",
        "TypeError: new_compiler() got an unexpected keyword argument 'dry_run'",
        "dry_run",
    ),
    # --- A setup.py that builds only on the board it finds in /proc/cpuinfo or the device tree.
    Rule(  # Adafruit_DHT 1.4.0
        "needs-board",
        r"Could not detect if running on (?:the |a )?(?P<detail>Raspberry Pi(?: or [\w ]+?)?)\.",
        "Could not detect if running on the Raspberry Pi or Beaglebone Black.  If this failure is unexpected,"
        " you can run again with --force-pi or --force-bbb parameter",
        "Raspberry Pi or Beaglebone Black",
    ),
    Rule(  # picamera 1.13
        "needs-board",
        r"Unable to determine if this (?:system|board|device) is an? (?P<detail>[\w .-]+?)\s*$",
        "ValueError: Unable to determine if this system is a Raspberry Pi",
        "Raspberry Pi",
    ),
    # --- A build backend newer than the project's configuration (cf. setuptools-too-new).
    Rule(  # ruckig 0.15.3 under scikit-build-core >= 0.10
        "build-backend-too-new",
        # an ERROR only: pyzmq prints the same words as a WARNING and fails for another reason
        r"ERROR: Use build\.\w+ instead of (?P<old>cmake\.\w+)",
        "ERROR: Use build.targets instead of cmake.targets for scikit-build-core >= 0.10",
        "scikit-build-core: cmake.targets",
        detail="scikit-build-core: {old}",
    ),
)
