"""The `.meta` a TF1 `Saver` writes beside a checkpoint: a MetaGraphDef of the training graph.

`saver.save(sess, "dir/model.ckpt", global_step=20)` writes `model.ckpt-20.meta`, often only
for the first step saved (`write_meta_graph=False` later on). Two stages read it: checkpoint
grouping (the variables' creation order) and the `meta` reference of a run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError

from bnaudit.errors import BnauditError
from bnaudit.files import META_LIMIT, file_size, read_bytes
from bnaudit.formats import protos
from bnaudit.formats.signatures import head

# The first byte of a serialized MetaGraphDef is the tag of one of its fields 1 to 7.
_FIELD_TAGS = tuple(bytes([field << 3 | 2]) for field in range(1, 8))


def metas_beside(prefix: Path) -> list[Path]:
    """`PREFIX.meta` first, then the directory's other `.meta` files, latest step first."""
    own = prefix.with_name(prefix.name + ".meta")
    others = sorted(
        (p for p in prefix.parent.glob("*.meta") if p != own),
        key=lambda p: _natural(p.name),
        reverse=True,
    )
    return ([own] if own.is_file() else []) + others


def read_meta_graph_def(path: Path) -> tuple[bytes, Any]:
    """The file's bytes and its parsed MetaGraphDef; a BnauditError when it is not one."""
    file_size(path, "a MetaGraphDef (.meta)", limit=2**63)  # a pipe would block the read
    if not head(path, 1).startswith(_FIELD_TAGS):
        raise BnauditError(f"{path.name} is not a MetaGraphDef")
    data = read_bytes(path, "a MetaGraphDef (.meta)", META_LIMIT)
    try:
        return data, protos.MetaGraphDef.FromString(data)
    except (DecodeError, RecursionError):
        raise BnauditError(f"{path.name} is not a MetaGraphDef") from None


def _natural(name: str) -> list[Any]:
    """`model.ckpt-9` before `model.ckpt-10`."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
