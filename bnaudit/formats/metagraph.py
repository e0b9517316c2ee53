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
from bnaudit.files import GRAPH_LIMIT, read_bytes
from bnaudit.formats import protos


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
    data = read_bytes(path, "a MetaGraphDef (.meta)", GRAPH_LIMIT)
    try:
        return data, protos.MetaGraphDef.FromString(data)
    except (DecodeError, RecursionError):
        raise BnauditError(f"{path.name} is not a MetaGraphDef") from None


def _natural(name: str) -> list[Any]:
    """`model.ckpt-9` before `model.ckpt-10`."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
