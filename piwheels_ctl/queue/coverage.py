"""Which (version, ABI) pairs our own wheels cover, so that the queue skips them."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import insert, literal, select
from sqlalchemy.orm import Session

from ..abi import AbiTags, wheel_covers
from ..db.models import Abi, Coverage, File


def abi_tags(abi: Abi) -> AbiTags:
    return AbiTags(abi.python_tag, abi.abi_tag, abi.platform_tag)


def add_coverage(session: Session, file: File, abis: Iterable[Abi]) -> None:
    """Record every ABI the wheel ``file`` installs on, so the queue skips them."""
    for abi in abis:
        if wheel_covers(file.filename, abi_tags(abi)):
            session.merge(Coverage(version_id=file.version_id, abi_id=abi.id, file_id=file.id))


def cover_new_abi(session: Session, abi: Abi) -> None:
    """Record every wheel of ours that installs on ``abi``, an ABI just added: one INSERT …
    SELECT for each distinct set of wheel tags that covers it, none walking the files."""
    tags = abi_tags(abi)
    kinds = session.execute(select(File.python_tag, File.abi_tag, File.platform_tag).distinct()).all()
    for python_tag, abi_tag, platform_tag in kinds:
        # The tags decide alone: any name and version stand for the file's.
        if not wheel_covers(f"x-0-{python_tag}-{abi_tag}-{platform_tag}.whl", tags):
            continue
        files = select(File.version_id, literal(abi.id), File.id).where(
            File.python_tag == python_tag, File.abi_tag == abi_tag, File.platform_tag == platform_tag
        )
        session.execute(insert(Coverage).from_select(["version_id", "abi_id", "file_id"], files))
