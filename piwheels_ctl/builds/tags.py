"""Which tags a build may hand back, and whose fault another one is: the builder's when its own
interpreter or compiler made it, the project's otherwise, decided from what the agent found out.

A wheel's tag is text the project's build can write as it likes (``bdist_wheel --plat-name``,
``python_tag`` in ``setup.cfg``, a renamed file), so which tag appears never decides. The facts do:
the tags of the interpreter that built (``agent.buildplatform``), the builder's kernel, and the
machine and class of every ELF file in the wheel (``agent.elfdeps``), as the agent reports them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from packaging.tags import Tag

from ..abi import AbiTags, tag_covers
from ..errors import TagError, VerifyError

# ELF's e_machine numbers, named as ``uname -m`` and the platform tags name their machines.
ELF_MACHINES = {3: "i386", 8: "mips", 20: "ppc", 21: "ppc64", 22: "s390", 40: "arm", 62: "x86_64",
                183: "aarch64", 243: "riscv"}  # fmt: skip
# The ELF files a machine's own compiler makes: (e_machine, class in bits) by ``uname -m``.
MACHINE_ELF = {
    "x86_64": (62, 64), "i686": (3, 32), "i386": (3, 32), "aarch64": (183, 64), "armv8l": (40, 32),
    "armv7l": (40, 32), "armv6l": (40, 32), "ppc64le": (21, 64), "ppc64": (21, 64), "s390x": (22, 64),
    "riscv64": (243, 64),
}  # fmt: skip
BLAME = "the project wrote this tag itself"


@dataclass(frozen=True)
class BuildFacts:
    """What the agent found out about a build and one of its wheels."""

    interpreter: AbiTags  # the tags the interpreter that built makes
    machine: str | None = None  # the builder's kernel (``uname -m``)
    personality: str | None = None  # "linux32": a 32-bit userland on that 64-bit kernel
    elf: frozenset[tuple[int, int]] | None = None  # (e_machine, bits) of its ELF files; None: unknown
    repaired: bool = False  # the agent's auditwheel repaired it for its glibc's manylinux policy


def build_facts(
    abi: AbiTags, platform: dict[str, Any] | None, elf: list[dict[str, int]] | None
) -> BuildFacts:
    """The facts of the agent's answer: its ``platform`` and one wheel's ``elf`` (``jobspec``); the
    job's ABI, as the builder's probe found it, stands for the interpreter the agent did not describe."""
    platform = platform or {}
    tags = [str(platform.get(key) or "") for key in ("python_tag", "abi_tag", "platform_tag")]
    interpreter = AbiTags(*tags) if all(tags) else abi
    found = None if elf is None else frozenset((e["machine"], e["class"]) for e in elf)
    return BuildFacts(interpreter, platform.get("machine"), platform.get("personality"), found)


def check_tags(filename: str, tags: frozenset[Tag], abi: AbiTags, facts: BuildFacts | None = None) -> None:
    """Refuse a wheel whose tags claim more than the builder of ``abi`` can have made.

    Every tag must be for the builder's platform (or ``any``): a ``manylinux`` or foreign tag
    would make the index serve the wheel to machines it was never built or checked for. A tag
    naming an interpreter or ABI must cover ``abi``; only generic ``pyN-none`` tags may name
    other Pythons. A tag that does not fit is the project's (VerifyError), unless ``facts`` show
    the builder made it (TagError, see ``fault``); a wheel that installs on none of ``abi`` is
    always the project's.
    """
    facts = facts or BuildFacts(abi)
    machine = abi.platform_tag.removeprefix("linux_")
    for tag in sorted(tags, key=str):
        if facts.repaired and re.fullmatch(rf"manylinux_\d+_\d+_{re.escape(machine)}", tag.platform):
            pass  # the builder's own repair (``repair``): its manylinux policy, its machine
        elif tag.platform not in ("any", abi.platform_tag):
            problem = f"tag {tag} is for platform {tag.platform!r}, the job's is {abi.platform_tag!r}"
            raise fault(filename, tag, abi, facts, problem)
        generic = tag.interpreter.startswith("py") and tag.abi == "none"
        if not generic and not tag_covers(tag, abi):
            raise fault(filename, tag, abi, facts, f"tag {tag} does not fit the job's ABI {abi.tag}")
    if not any(tag_covers(tag, abi) for tag in tags):
        raise VerifyError(f"{filename}: installs on none of the job's ABI {abi.tag}")


def fault(filename: str, tag: Tag, abi: AbiTags, facts: BuildFacts, problem: str) -> VerifyError:
    """The error for ``tag``, which does not fit the job: whose doing it is, said from ``facts``.

    The builder's (TagError: its job goes to another builder) when its interpreter is not the
    job's, or when every ELF file is for the builder's 64-bit kernel rather than its 32-bit
    userland and the tag names that kernel's platform: the builder's compiler made the code, a
    builder set up wrongly. The project's (VerifyError) otherwise: a tag other than what the
    interpreter and compiler produce, with ELF files of the builder's own machine, of a machine
    the builder is not, or none at all.
    """
    if facts.interpreter != abi:
        return TagError(
            f"{filename}: {problem}; the interpreter that built it makes {facts.interpreter.tag}:"
            f" the builder ran another interpreter than the job's"
        )
    elf = facts.elf
    kernel = MACHINE_ELF.get(facts.machine or "")
    userland = MACHINE_ELF.get(abi.platform_tag.removeprefix("linux_"))
    if (
        elf
        and kernel is not None
        and kernel != userland
        and elf == {kernel}
        and tag.platform == f"linux_{facts.machine}"
    ):
        return TagError(
            f"{filename}: {problem}; its ELF files are {describe_elf(elf)}, the kernel's"
            f" ({facts.machine}, personality {facts.personality}): the builder's compiler made code"
            f" for its kernel, not for its userland"
        )
    if elf is None:
        found = "the builder did not say what its ELF files are"
    elif not elf:
        found = "it has no ELF files"
    else:
        own = " (this builder's own)" if elf == {userland} else ""
        found = f"its ELF files are {describe_elf(elf)}{own}"
    return VerifyError(
        f"{filename}: {problem}; the interpreter that built it makes {facts.interpreter.tag},"
        f" and {found}: {BLAME}"
    )


def describe_elf(elf: frozenset[tuple[int, int]]) -> str:
    """``{(62, 64)}`` as ``x86_64 (64-bit)``."""
    return ", ".join(
        f"{ELF_MACHINES.get(machine, f'machine {machine}')} ({bits}-bit)" for machine, bits in sorted(elf)
    )
