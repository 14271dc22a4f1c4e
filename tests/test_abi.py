"""The coverage rules: which ABIs a wheel installs on."""

from __future__ import annotations

import pytest

from piwheels_ctl.abi import AbiTags, wheel_covers

CP311 = AbiTags("cp311", "cp311", "linux_x86_64")
CP39 = AbiTags("cp39", "cp39", "linux_x86_64")
CP37 = AbiTags("cp37", "cp37m", "linux_armv7l")
CP27 = AbiTags("cp27", "cp27mu", "linux_armv7l")
PP310 = AbiTags("pp310", "pypy310_pp73", "linux_x86_64")
ARM311 = AbiTags("cp311", "cp311", "linux_armv7l")


@pytest.mark.parametrize(
    ("filename", "covered", "not_covered"),
    [
        ("a-1.0-py3-none-any.whl", [CP311, CP39, CP37, PP310, ARM311], [CP27]),
        ("a-1.0-py2.py3-none-any.whl", [CP311, CP27, PP310], []),
        ("a-1.0-py2-none-any.whl", [CP27], [CP311, PP310]),
        ("a-1.0-py38-none-any.whl", [CP311, CP39, PP310], [CP37, CP27]),
        ("a-1.0-cp38-abi3-linux_x86_64.whl", [CP311, CP39], [PP310, ARM311, CP37, CP27]),
        ("a-1.0-cp312-abi3-linux_x86_64.whl", [], [CP311]),
        ("a-1.0-cp311-cp311-linux_x86_64.whl", [CP311], [CP39, PP310, ARM311]),
        ("a-1.0-pp310-pypy310_pp73-linux_x86_64.whl", [PP310], [CP311]),
        ("a-1.0-cp37-cp37m-linux_armv7l.whl", [CP37], [CP311, ARM311]),
        ("a-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", [CP311], [ARM311]),
        ("a-1.0-cp311-none-any.whl", [CP311], [CP39, PP310]),
    ],
)
def test_wheel_covers(filename: str, covered: list[AbiTags], not_covered: list[AbiTags]) -> None:
    for abi in covered:
        assert wheel_covers(filename, abi), abi
    for abi in not_covered:
        assert not wheel_covers(filename, abi), abi
