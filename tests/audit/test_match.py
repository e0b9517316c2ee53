"""Pairing graph layers with checkpoint groups: each strategy, and what stays unpaired."""

from __future__ import annotations

import numpy as np
import pytest

from bnaudit.audit.detect import BnLayer, Param
from bnaudit.audit.match import Group, pair_layers, parse_maps
from bnaudit.names import normalize


def _layer(scope: str, channels: int, mean: float = 0.5, source: str | None = None) -> BnLayer:
    value = np.full(channels, mean, np.float32)
    params = {
        role: Param("const", source or f"{scope}/Const_{role}", value)
        for role in ("gamma", "beta", "moving_mean", "moving_variance")
    }
    return BnLayer(
        name=f"{scope}/batchnorm/add_1", scope=scope, op="decomposed", mode="inference",
        flag=None, epsilon=1e-3, channels=channels, data_format="channels_last",
        params=params, position=0, core_nodes=(),
    )  # fmt: skip


def _group(scope: str, channels: int, order: int, names: tuple[str, ...] = ()) -> Group:
    keys = {"moving_mean": f"{scope}/moving_mean"}
    return Group(scope=scope, names=(scope, *names), keys=keys, channels=channels, order=order)


def _methods(pairs) -> dict[str, tuple[str | None, str | None]]:  # type: ignore[no-untyped-def]
    return {
        (p.layer.scope if p.layer else "-"): (p.group.scope if p.group else None, p.method)
        for p in pairs
    }


def test_normalize_strips_framework_decorations() -> None:
    assert normalize("functional_1/bn1_1") == "bn1_1"  # the call suffix is pairing's business
    assert normalize("model/bn1/moving_mean/read") == "bn1/moving_mean"
    assert (
        normalize("model/_operations/2/gamma/.ATTRIBUTES/VARIABLE_VALUE") == "_operations/2/gamma"
    )


def test_scope_pairs_a_named_keras_model() -> None:
    pairs = pair_layers(
        [_layer("resnet50_1/conv1_bn_1", 4)], [_group("conv1_bn", 4, 0)], [], lambda g: None
    )
    assert _methods(pairs) == {"resnet50_1/conv1_bn_1": ("conv1_bn", "scope")}


def test_numbered_names_pair_with_themselves() -> None:
    """TF1 default names: `batch_normalization_1` is its own layer, not a call suffix."""
    layers = [_layer("batch_normalization", 4), _layer("batch_normalization_1", 8)]
    groups = [_group("batch_normalization_1", 8, 1), _group("batch_normalization", 4, 0)]
    assert _methods(pair_layers(layers, groups, [], lambda g: None)) == {
        "batch_normalization": ("batch_normalization", "scope"),
        "batch_normalization_1": ("batch_normalization_1", "scope"),
    }


def test_traced_keras_scopes_drop_the_call_suffix() -> None:
    """A traced Keras 3 graph names layer `batch_normalization` `.../batch_normalization_1`."""
    layers = [
        _layer("functional_1/batch_normalization_1", 4, source="f/Cast/ReadVariableOp/resource"),
        _layer("functional_1/batch_normalization_1_1", 8, source="g/Cast/ReadVariableOp/resource"),
    ]
    groups = [_group("batch_normalization", 4, 0), _group("batch_normalization_1", 8, 1)]
    assert _methods(pair_layers(layers, groups, [], lambda g: None)) == {
        "functional_1/batch_normalization_1": ("batch_normalization", "scope"),
        "functional_1/batch_normalization_1_1": ("batch_normalization_1", "scope"),
    }


def test_order_then_values_then_unpaired() -> None:
    layers = [_layer("a/x", 4), _layer("a/y", 8)]
    groups = [_group("model/_operations/5", 8, 1), _group("model/_operations/2", 4, 0)]
    pairs = pair_layers(layers, groups, [], lambda g: None)
    assert _methods(pairs) == {
        "a/x": ("model/_operations/2", "order"),
        "a/y": ("model/_operations/5", "order"),
    }
    # Channels disagree with the order: fall back to values, leave the rest unpaired.
    layers = [_layer("a/x", 8, mean=0.25), _layer("a/y", 4)]
    stats = {"g1": np.full(8, 0.25, np.float32), "g2": np.zeros(6, np.float32)}
    groups = [_group("g1", 8, 0), _group("g2", 6, 1)]
    pairs = pair_layers(layers, groups, [], lambda g: stats[g.scope])
    assert _methods(pairs) == {"a/x": ("g1", "values"), "a/y": (None, None), "-": ("g2", None)}


def test_exact_and_map() -> None:
    layer = _layer("net/bn", 4, source="net/bn/moving_mean")
    assert _methods(pair_layers([layer], [_group("net/bn", 4, 0)], [], lambda g: None)) == {
        "net/bn": ("net/bn", "exact")
    }
    renamed = _group("tower/bn", 4, 0)
    maps = parse_maps(("net/=tower/",))
    assert _methods(pair_layers([layer, _layer("z", 9)], [renamed], maps, lambda g: None))[
        "net/bn"
    ] == ("tower/bn", "map")


def test_parse_maps_rejects_malformed_rules() -> None:
    with pytest.raises(ValueError, match="OLD=NEW"):
        parse_maps(("nothing",))


def test_a_layer_applied_twice_pairs_with_its_one_group() -> None:
    first = _layer("bn", 4, source="bn/moving_mean")
    again = _layer("bn_1", 4, source="bn/moving_mean")  # reuse=True reads the same constants
    pairs = pair_layers([first, again], [_group("bn", 4, 0)], [], lambda g: None)
    assert _methods(pairs) == {"bn": ("bn", "exact"), "bn_1": ("bn", "shared")}


def _statless(scope: str, channels: int, order: int, roles: tuple[str, ...]) -> Group:
    keys = {role: f"{scope}/{role}" for role in roles}
    return Group(scope=scope, names=(scope,), keys=keys, channels=channels, order=order)


def test_a_group_without_statistics_is_not_bn_unless_the_graph_names_it() -> None:
    """ConvNeXt's LayerScale (a lone gamma) and an unnamed layer norm are left out, never
    `missing-in-graph` or a fold; a layer the graph shows under that name still pairs."""
    layer_scale = _statless("block0_layer_scale", 8, 0, ("gamma",))
    norm = _statless("ln", 8, 1, ("gamma", "beta"))
    pairs = pair_layers([], [layer_scale, norm], [], lambda g: None)
    assert pairs == []
    saved_without_stats = _statless("bn1", 4, 0, ("gamma", "beta"))
    assert _methods(pair_layers([_layer("bn1", 4)], [saved_without_stats], [], lambda g: None)) == {
        "bn1": ("bn1", "scope")
    }


def test_groups_without_statistics_do_not_count_for_order_pairing() -> None:
    layers = [_layer("a", 4), _layer("b", 4)]
    groups = [_group("x", 4, 0), _statless("scale", 4, 1, ("gamma",)), _group("y", 4, 2)]
    assert _methods(pair_layers(layers, groups, [], lambda g: None)) == {
        "a": ("x", "order"),
        "b": ("y", "order"),
    }


def test_a_layer_name_under_the_checkpoints_name_scopes_pairs_by_its_last_part() -> None:
    """Keras 3 NASNet: the checkpoint's variables carry the name scopes the layer was built
    under; the layer's own name is unique in the model and pairs."""
    layers = [_layer("nasnet_1/reduction_bn_1_stem_1_1", 8), _layer("nasnet_1/stem_bn1_1", 8)]
    groups = [
        _group("reduction_A_block_stem_1/reduction_bn_1_stem_1", 8, 1),
        _group("stem_bn1", 8, 0),
    ]
    assert _methods(pair_layers(layers, groups, [], lambda g: None)) == {
        "nasnet_1/reduction_bn_1_stem_1_1": (
            "reduction_A_block_stem_1/reduction_bn_1_stem_1",
            "scope",
        ),
        "nasnet_1/stem_bn1_1": ("stem_bn1", "scope"),
    }


def test_a_last_part_many_groups_share_pairs_nothing() -> None:
    """slim names every BN `BatchNorm`: the last part tells nothing there."""
    layers = [_layer("net/net/a/BatchNorm", 4), _layer("net/net/b/BatchNorm", 8)]
    groups = [_group("other/x/BatchNorm", 4, 0), _group("other/y/BatchNorm", 4, 1)]
    pairs = pair_layers(layers, groups, [], lambda g: None)
    assert all(p.method != "scope" for p in pairs)


def test_a_sub_model_applied_twice_lines_up_once_and_its_repeat_shares() -> None:
    """Keras: `stage2` applied twice gives `stage2_1/bn_1` and `stage2_3/bn_1`, same
    constants; the checkpoint has three groups for four graph layers. Stale values pair
    nothing by value, so order pairs one application of each, and the repeat shares."""
    stage1, stage2, stage3 = (
        _layer(f"outer_1/stage{i}_1/bn_1", 4, mean=0.1 * i) for i in (1, 2, 3)
    )
    again = _layer("outer_1/stage2_3/bn_1", 4, mean=0.2, source="elsewhere")
    groups = [_group(f"model/_operations/{i}/_operations/2", 4, i) for i in range(3)]
    methods = _methods(pair_layers([stage1, stage2, again, stage3], groups, [], lambda g: None))
    assert methods == {
        "outer_1/stage1_1/bn_1": ("model/_operations/0/_operations/2", "order"),
        "outer_1/stage2_1/bn_1": ("model/_operations/1/_operations/2", "order"),
        "outer_1/stage2_3/bn_1": ("model/_operations/1/_operations/2", "shared"),
        "outer_1/stage3_1/bn_1": ("model/_operations/2/_operations/2", "order"),
    }
