"""The coverage rules: which ABIs a wheel installs on."""

from __future__ import annotations

import pytest

from piwheels_ctl.abi import AbiTags, parse_glibc, upstream_covers, wheel_covers

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


GLIBC = (2, 36)


@pytest.mark.parametrize(
    ("filename", "abi", "glibc", "covers"),
    [
        ("a-1.0-py3-none-any.whl", CP311, None, True),
        ("a-1.0-py2.py3-none-any.whl", ARM311, None, True),
        ("a-1.0-py2.py3-none-any.whl", PP310, None, True),
        ("a-1.0-py2-none-any.whl", CP311, None, False),
        ("a-1.0-cp38-abi3-linux_armv7l.whl", ARM311, None, True),
        ("a-1.0-cp38-abi3-linux_armv7l.whl", CP311, None, False),  # another platform
        ("a-1.0-cp312-abi3-linux_x86_64.whl", CP311, None, False),  # a later Python
        ("a-1.0-cp311-cp311-linux_x86_64.whl", CP311, None, True),
        ("a-1.0-cp311-cp311-linux_x86_64.whl", CP39, None, False),
        ("a-1.0-cp311-cp311-win_amd64.whl", CP311, GLIBC, False),
        # manylinux: only when the builders' glibc is known, new enough, for the same architecture.
        ("a-1.0-cp311-cp311-manylinux_2_31_armv7l.whl", ARM311, None, False),
        ("a-1.0-cp311-cp311-manylinux_2_31_armv7l.whl", ARM311, GLIBC, True),
        ("a-1.0-cp311-cp311-manylinux_2_31_armv7l.whl", ARM311, (2, 28), False),
        ("a-1.0-cp311-cp311-manylinux_2_31_armv7l.whl", CP311, GLIBC, False),
        ("a-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", CP311, GLIBC, True),
        ("a-1.0-cp39-abi3-manylinux2014_x86_64.whl", CP311, GLIBC, True),
        ("a-1.0-cp311-cp311-musllinux_1_1_x86_64.whl", CP311, GLIBC, False),
        ("a-1.0-pp310-pypy310_pp73-manylinux_2_17_x86_64.whl", PP310, GLIBC, True),
        ("a-1.0-pp310-pypy310_pp73-manylinux_2_17_x86_64.whl", CP311, GLIBC, False),
    ],
)
def test_upstream_wheels_cover_what_packaging_tags_says_installs(
    filename: str, abi: AbiTags, glibc: tuple[int, int] | None, covers: bool
) -> None:
    assert upstream_covers(filename, abi, glibc) is covers, (filename, abi.tag, glibc)


def test_glibc_setting_is_parsed() -> None:
    assert parse_glibc("2.36") == (2, 36)
    assert parse_glibc("") is None
