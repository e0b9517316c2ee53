"""Where bnaudit writes (a report, the fed inputs): never over one of its inputs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bnaudit.errors import UsageError
from bnaudit.formats.signatures import CHECKPOINT_FILE


def refuse_overwrite(option: str, written: Path | None, inputs: Sequence[Path]) -> None:
    """Refuse to write over an input, a file inside an input directory, or a checkpoint's file.

    A Saver prefix `dir/model.ckpt-20`, or any one of its files, stands for all its files; a
    SavedModel's `saved_model.pb` for its whole directory (its `variables/` are read too).
    """
    if written is None:
        return
    target = written.resolve()
    for path in inputs:
        source = path.resolve()
        if source.name == "saved_model.pb":
            source = source.parent
        same = target == source
        inside = source.is_dir() and source in target.parents
        stem = CHECKPOINT_FILE.sub("", source.name)
        sibling = target.parent == source.parent and target.name.startswith(stem + ".")
        if same or inside or sibling:
            raise UsageError(
                f"{option} {written} would write over the input {path}; bnaudit never writes "
                "to its inputs"
            )
