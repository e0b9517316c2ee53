"""Detection on the training graphs TensorFlow wrote beside the checkpoints (`.meta`).

Training graphs hang gradient ops on every BN tensor; each layer of the frozen graph must
still be found there, under the same scope, reading variables.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import MODELS, expected

from bnaudit import protos
from bnaudit.listing import list_bn

METAS = sorted(MODELS.glob("*/ckpt/*.meta"))


@pytest.mark.parametrize("meta_path", METAS, ids=[p.parts[-3] for p in METAS])
def test_training_graph_has_the_frozen_layers(meta_path: Path, tmp_path: Path) -> None:
    meta = protos.MetaGraphDef.FromString(meta_path.read_bytes())
    graph = tmp_path / "train_graph.pb"
    graph.write_bytes(meta.graph_def.SerializeToString())
    training = list_bn(graph)
    folder = meta_path.parent.parent
    frozen = [layer["scope"] for layer in expected(folder)["list_bn"]["layers"]]
    if not frozen:  # a folded graph: its BN layers live on in the training graph only
        assert training.layers
        return
    assert [layer.scope for layer in training.layers] == frozen
    for layer in training.layers:
        kinds = {p.kind for p in layer.params.values()}
        assert kinds <= {"variable", "absent", "batch"}, layer.scope
