"""Opening checkpoints of every kind, their errors, and grouping their BN variables."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ckpt_factory import build
from conftest import MODELS

from bnaudit.checkpoint.groups import bn_groups
from bnaudit.checkpoint.resolve import open_checkpoint
from bnaudit.errors import BnauditError

FULL = {"gamma", "beta", "moving_mean", "moving_variance"}
STATS = {"moving_mean", "moving_variance"}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return build(tmp_path_factory.getbasetemp() / "tf_checkpoints")


@pytest.fixture(scope="module")
def root(built: dict[str, Any]) -> Path:
    return Path(built["prefixes"]["tf1"]).parent.parent


def _copy_prefix(prefix: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for file in prefix.parent.glob(f"{prefix.name}.*"):
        shutil.copy(file, dest / file.name)
    return dest / prefix.name


# --- resolving paths ------------------------------------------------------------------


def test_prefix(built: dict[str, Any]) -> None:
    ckpt = open_checkpoint(built["prefixes"]["tf1"])
    assert (ckpt.kind, ckpt.path, ckpt.notes) == ("tf1-saver", Path(built["prefixes"]["tf1"]), [])


def test_directory_uses_latest(root: Path) -> None:
    ckpt = open_checkpoint(root / "tf1")
    assert ckpt.path == root / "tf1" / "model.ckpt-20"
    assert ckpt.notes == [
        f"using the latest checkpoint model.ckpt-20, named in {root}/tf1/checkpoint"
    ]
    assert open_checkpoint(root / "tf1" / "checkpoint").path == ckpt.path


@pytest.mark.parametrize("suffix", [".index", ".data-00000-of-00001", ".meta"])
def test_one_file_of_a_checkpoint(root: Path, suffix: str) -> None:
    ckpt = open_checkpoint(root / "tf1" / f"model.ckpt-20{suffix}")
    assert ckpt.path == root / "tf1" / "model.ckpt-20"
    assert ckpt.notes == [
        f"model.ckpt-20{suffix} is one file of a checkpoint; using its prefix model.ckpt-20"
    ]


def test_relative_and_moved_checkpoint_file(root: Path, tmp_path: Path) -> None:
    prefix = _copy_prefix(root / "tf1" / "model.ckpt-20", tmp_path / "moved")
    state = prefix.parent / "checkpoint"
    state.write_text('model_checkpoint_path: "/gone/train/model.ckpt-20"\n')
    ckpt = open_checkpoint(prefix.parent)
    assert ckpt.path == prefix
    assert "/gone/train/model.ckpt-20, which does not exist" in ckpt.notes[0]
    state.write_text('model_checkpoint_path: "model.ckpt-20"\n')
    assert open_checkpoint(prefix.parent).path == prefix


def test_kinds(built: dict[str, Any], root: Path) -> None:
    assert open_checkpoint(built["prefixes"]["tf2"]).kind == "tf2-object"
    assert open_checkpoint(root / "tf2").path == Path(built["prefixes"]["tf2"])
    saved = open_checkpoint(root / "saved_model")
    assert (saved.kind, saved.path) == ("saved-model", root / "saved_model/variables/variables")
    assert open_checkpoint(root / "model.weights.h5").kind == "keras-h5"
    assert open_checkpoint(root / "model.keras").kind == "keras-archive"


def test_sharded(built: dict[str, Any]) -> None:
    ckpt = open_checkpoint(Path(built["prefixes"]["sharded"]).parent)
    assert {v.key for v in ckpt.variables()} == set(built["tensors"]["sharded"])


# --- values ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tf1", "tf2", "saved_model", "module", "sharded"])
def test_bundle_values_match_tensorflow(built: dict[str, Any], name: str) -> None:
    ckpt = open_checkpoint(built["prefixes"][name])
    reference = built["tensors"][name]
    assert {v.key for v in ckpt.variables()} == set(reference)
    for info in ckpt.variables():
        tf_dtype, value = reference[info.key]
        assert info.dtype == tf_dtype
        assert info.shape == np.shape(value)
        if tf_dtype != "string":
            assert np.array_equal(ckpt.read(info.key), value), info.key


@pytest.mark.parametrize(
    "name", ["tf2", "tf2_model", "saved_model", "model.weights.h5", "model.keras"]
)
def test_keras_groups_hold_the_models_values(built: dict[str, Any], root: Path, name: str) -> None:
    ckpt = open_checkpoint(built["prefixes"].get(name, root / name))
    groups = bn_groups(ckpt)
    assert [g.scope for g in groups] == ["bn_full", "bn_noscale", "bn_nocenter"]
    assert [g.order for g in groups] == [0, 1, 2]
    for group in groups:
        expected = built["keras_bn"][group.scope]
        assert set(group.keys) == set(expected)
        for role, key in group.keys.items():
            assert np.array_equal(ckpt.read(key), expected[role]), (group.scope, role)


def test_h5_guess_is_noted(root: Path) -> None:
    ckpt = open_checkpoint(root / "model.weights.h5")
    bn_groups(ckpt)
    bn_groups(ckpt)
    assert ckpt.notes == [
        "bn_noscale: 3 BatchNormalization variables and no config; took the first as beta "
        "(scale=False) from its values",
        "bn_nocenter: 3 BatchNormalization variables and no config; took the first as gamma "
        "(center=False) from its values",
    ]
    assert open_checkpoint(root / "model.keras").notes == []


def test_reading_never_imports_tensorflow(built: dict[str, Any], root: Path) -> None:
    paths = [*built["prefixes"].values(), str(root / "model.weights.h5"), str(root / "model.keras")]
    script = (
        "import sys, json\n"
        "from bnaudit.checkpoint.resolve import open_checkpoint\n"
        "from bnaudit.checkpoint.groups import bn_groups\n"
        "for path in json.loads(sys.argv[1]):\n"
        "    ckpt = open_checkpoint(path)\n"
        "    bn_groups(ckpt)\n"
        "    for info in ckpt.variables():\n"
        "        if 'part' != info.key: ckpt.read(info.key)\n"
        "    ckpt.close()\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
        "assert 'keras' not in sys.modules, 'keras was imported'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(paths)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_inputs_are_not_modified(root: Path) -> None:
    def digest() -> dict[str, str]:
        return {
            str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "reference.pkl"
        }

    before = digest()
    for path in [root / "tf1", root / "tf2", root / "saved_model", root / "model.keras"]:
        with open_checkpoint(path) as ckpt:
            bn_groups(ckpt)
            for info in ckpt.variables():
                if info.key != "part":
                    ckpt.read(info.key)
    assert digest() == before


# --- errors ---------------------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(BnauditError, match=r"does not exist; pass a checkpoint prefix"):
        open_checkpoint(tmp_path / "nothing")


def test_prefix_without_step(root: Path) -> None:
    with pytest.raises(BnauditError, match=r"no checkpoint .*model\.ckpt; .*model\.ckpt-20"):
        open_checkpoint(root / "tf1" / "model.ckpt")


def test_directory_without_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(BnauditError, match=r"holds no checkpoint or SavedModel"):
        open_checkpoint(tmp_path)


def test_directory_with_several_prefixes(root: Path, tmp_path: Path) -> None:
    _copy_prefix(root / "tf1" / "model.ckpt-20", tmp_path)
    _copy_prefix(root / "trainable" / "model.ckpt", tmp_path)
    with pytest.raises(BnauditError, match=r"several checkpoints .* pass one prefix"):
        open_checkpoint(tmp_path)
    (tmp_path / "model.ckpt.index").unlink()
    assert "no `checkpoint` file" in open_checkpoint(tmp_path).notes[0]


def test_checkpoint_file_naming_missing_prefix(tmp_path: Path) -> None:
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-99"\n')
    with pytest.raises(
        BnauditError, match=r"names checkpoint model.ckpt-99, but .* does not exist"
    ):
        open_checkpoint(tmp_path)
    (tmp_path / "checkpoint").write_text("garbage\n")
    with pytest.raises(BnauditError, match=r"names no model_checkpoint_path"):
        open_checkpoint(tmp_path)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:20], "not a valid checkpoint index .*truncated or corrupt"),
        (lambda b: b[:-8] + b"\x00" * 8, "bad magic"),
    ],
)
def test_corrupt_index(root: Path, tmp_path: Path, damage: Any, message: str) -> None:
    prefix = _copy_prefix(root / "tf1" / "model.ckpt-20", tmp_path)
    index = Path(f"{prefix}.index")
    index.write_bytes(damage(index.read_bytes()))
    with pytest.raises(BnauditError, match=message):
        open_checkpoint(prefix)


def test_missing_data_shard(root: Path, tmp_path: Path) -> None:
    prefix = _copy_prefix(root / "sharded" / "model.ckpt", tmp_path)
    Path(f"{prefix}.data-00001-of-00002").unlink()
    with pytest.raises(BnauditError, match=r"data-00001-of-00002 is missing; copy every"):
        open_checkpoint(prefix)


def test_index_without_the_rest(root: Path, tmp_path: Path) -> None:
    shutil.copy(root / "tf1" / "model.ckpt-20.index", tmp_path)
    with pytest.raises(BnauditError, match=r"is missing"):
        open_checkpoint(tmp_path / "model.ckpt-20.index")


def test_frozen_graph_is_not_a_checkpoint(tmp_path: Path) -> None:
    graph = tmp_path / "frozen.pb"
    graph.write_bytes(b"\n\x05\n\x01x\x12\x00")
    with pytest.raises(BnauditError, match=r"frozen.pb is a model graph, not a checkpoint"):
        open_checkpoint(graph)


def test_random_bytes(tmp_path: Path) -> None:
    junk = tmp_path / "weights.bin"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(BnauditError, match=r"is not a checkpoint bnaudit can read"):
        open_checkpoint(junk)


def test_index_without_suffix(root: Path, tmp_path: Path) -> None:
    shutil.copy(root / "tf1" / "model.ckpt-20.index", tmp_path / "renamed")
    with pytest.raises(BnauditError, match=r"rename it renamed.index"):
        open_checkpoint(tmp_path / "renamed")


def test_savedmodel_without_variables(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes(b"")
    with pytest.raises(BnauditError, match=r"has no variables/variables.index"):
        open_checkpoint(tmp_path)


def test_zip_without_weights(tmp_path: Path) -> None:
    import zipfile

    with zipfile.ZipFile(tmp_path / "model.keras", "w") as archive:
        archive.writestr("config.json", "{}")
    with pytest.raises(BnauditError, match=r"without model.weights.h5"):
        open_checkpoint(tmp_path / "model.keras")


def test_truncated_h5(root: Path, tmp_path: Path) -> None:
    (tmp_path / "x.weights.h5").write_bytes((root / "model.weights.h5").read_bytes()[:2000])
    with pytest.raises(BnauditError, match=r"cannot read .* as a Keras weights file"):
        open_checkpoint(tmp_path / "x.weights.h5")


# --- grouping -------------------------------------------------------------------------


def _roles(groups: list[Any]) -> dict[str, set[str]]:
    return {g.scope: set(g.keys) for g in groups}


def test_tf1_groups(built: dict[str, Any]) -> None:
    groups = bn_groups(open_checkpoint(built["prefixes"]["tf1"]))
    assert _roles(groups) == {
        "model/bn1": FULL,
        "model/bn2": {"beta"} | STATS,
        "model/custom": FULL,  # scale, offset, pop_mean, pop_var
        "model/hand": FULL,  # gamma, beta, mean, variance
        "model/torchish": FULL,  # running_mean, running_var
    }  # not model/norm (mean, variance only) nor model/LayerNorm
    custom = next(g for g in groups if g.scope == "model/custom")
    assert custom.keys == {
        "gamma": "model/custom/scale",
        "beta": "model/custom/offset",
        "moving_mean": "model/custom/pop_mean",
        "moving_variance": "model/custom/pop_var",
    }
    assert [g.order for g in groups] == [0, 1, 2, 3, 4]  # creation order, from the .meta
    assert groups[0].keys["gamma"] == "model/bn1/gamma"  # not the /Adam slots


def test_trainable_only_saver_still_groups(built: dict[str, Any]) -> None:
    groups = bn_groups(open_checkpoint(built["prefixes"]["trainable"]))
    assert _roles(groups)["model/bn1"] == {"gamma", "beta"}


def test_object_graph_groups(built: dict[str, Any]) -> None:
    groups = bn_groups(open_checkpoint(built["prefixes"]["tf2"]))
    full = groups[0]
    assert full.names == ("bn_full", "model/_operations/2")
    # With the optimizer saved too, TensorFlow keys trainable variables under it.
    assert full.keys["gamma"].startswith("optimizer/_trainable_variables/")
    assert full.keys["moving_mean"] == "model/_operations/2/moving_mean/.ATTRIBUTES/VARIABLE_VALUE"
    module = bn_groups(open_checkpoint(built["prefixes"]["module"]))
    assert [(g.scope, set(g.keys)) for g in module] == [("model/bn1", FULL)]
    assert module[0].keys["moving_variance"] == "model/bn1/pop_var/.ATTRIBUTES/VARIABLE_VALUE"


def test_sharded_groups(built: dict[str, Any]) -> None:
    ckpt = open_checkpoint(built["prefixes"]["sharded"])
    (group,) = bn_groups(ckpt)
    assert group.scope == "bn" and set(group.keys) == FULL
    assert ckpt.read(group.keys["moving_variance"]).tolist() == [2.0, 2.0, 2.0]


def test_no_bn(built: dict[str, Any]) -> None:
    assert bn_groups(open_checkpoint(built["prefixes"]["many"])) == []


@pytest.mark.parametrize(
    "checkpoint",
    sorted(
        str(p.relative_to(MODELS))
        for p in [*MODELS.glob("*/ckpt"), *MODELS.glob("*/*.weights.h5"), *MODELS.glob("*/*.keras")]
    ),
)
def test_committed_fixtures_group(checkpoint: str) -> None:
    ckpt = open_checkpoint(MODELS / checkpoint)
    groups = bn_groups(ckpt)
    if checkpoint.startswith("apps_convnext"):  # no BN: LayerScale's lone gamma at most
        assert all({"moving_mean", "moving_variance"}.isdisjoint(g.keys) for g in groups)
        return
    assert groups, checkpoint
    orders = [g.order for g in groups]
    # A Saver checkpoint without a .meta beside it has no known order.
    assert orders == [None] * len(groups) or sorted(orders) == list(range(len(groups)))  # type: ignore[type-var]
    for group in groups:
        for key in group.keys.values():
            assert ckpt.read(key).ndim == 1
