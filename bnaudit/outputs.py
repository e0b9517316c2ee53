"""Where bnaudit writes (a report, the fed inputs): never over one of its inputs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from bnaudit.errors import UsageError
from bnaudit.files import resolved, shown
from bnaudit.formats.signatures import CHECKPOINT_FILE


def refuse_overwrite(option: str, written: Path | None, inputs: Sequence[Path]) -> None:
    """Refuse to write over an input, a file inside an input directory, or a checkpoint's file.

    Paths are compared resolved (through symbolic links) and, when the target exists, as
    files (the same device and inode: a hard link is the same file). A Saver prefix
    `dir/model.ckpt-20`, or any one of its files, stands for all its files; a SavedModel's
    `saved_model.pb` for its whole directory (its `variables/` are read too).
    """
    if written is None:
        return
    try:
        target = written.resolve()
    except (RuntimeError, OSError) as error:
        raise UsageError(f"{option} {shown(written)}: cannot resolve the path ({error})") from None
    for path in inputs:
        source = resolved(path)
        if source.name == "saved_model.pb":
            source = source.parent
        same = target == source or _same_file(target, source)
        inside = source.is_dir() and source in target.parents
        stem = CHECKPOINT_FILE.sub("", source.name)
        sibling = target.parent == source.parent and target.name.startswith(stem + ".")
        if same or inside or sibling:
            raise UsageError(
                f"{option} {shown(written)} would write over the input {shown(path)}; bnaudit "
                "never writes to its inputs"
            )


def _same_file(target: Path, source: Path) -> bool:
    try:
        return target.exists() and source.exists() and os.path.samefile(target, source)
    except OSError:
        return False
