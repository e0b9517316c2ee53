"""Findings a frozen graph shows on its own, on layers built by hand with numpy values."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bnaudit.audit.detect import BnLayer, GraphScan, Param
from bnaudit.audit.health import graph_findings, layer_findings
from bnaudit.audit.trace import Flag
from bnaudit.findings import CATALOG, INFERENCE_FIX, Finding, Severity
from bnaudit.vocab import Mode, Role

SCOPE = "model/bn1"


def _const(values: Any, dtype: Any = np.float32) -> Param:
    return Param("const", "model/bn1/const", np.asarray(values, dtype=dtype))


def _healthy() -> dict[Role, Param]:
    return {
        "gamma": _const([1.5, 0.5, 1.0]),
        "beta": _const([0.1, -0.2, 0.0]),
        "moving_mean": _const([0.3, -1.0, 2.0]),
        "moving_variance": _const([0.9, 1.1, 4.0]),
    }


def _layer(mode: Mode = "inference", flag: Flag | None = None, **params: Param) -> BnLayer:
    return BnLayer(
        name=f"{SCOPE}/FusedBatchNormV3",
        scope=SCOPE,
        op="FusedBatchNormV3",
        mode=mode,
        flag=flag,
        epsilon=0.001,
        channels=3,
        data_format="NHWC",
        params={**_healthy(), **params},
        position=7,
        core_nodes=(f"{SCOPE}/FusedBatchNormV3",),
    )


def _codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


def _only(findings: list[Finding], code: str) -> Finding:
    assert _codes(findings) == [code]
    return findings[0]


def test_healthy_inference_layer_has_no_finding() -> None:
    assert layer_findings(_layer()) == []


def test_conditional_layer_with_false_default_has_no_finding() -> None:
    flag = Flag("is_training", False, constant=False)
    assert layer_findings(_layer("conditional", flag)) == []


def test_not_frozen_names_the_variables() -> None:
    layer = _layer(
        gamma=Param("variable", "model/bn1/gamma", None),
        moving_variance=Param("variable", "model/bn1/moving_variance", None),
    )
    found = _only(layer_findings(layer), "not-frozen")
    assert found.severity == Severity.WARNING
    assert found.layer == SCOPE
    assert found.message.startswith("gamma, moving_variance are read from variables")
    assert found.message.endswith("; " + CATALOG["not-frozen"].fix)


def test_training_mode_layer() -> None:
    batch = Param("batch", "batch statistics", None)
    layer = _layer("training", moving_mean=batch, moving_variance=batch)
    found = _only(layer_findings(layer), "training-mode")
    assert found.severity == Severity.ERROR
    assert found.layer == SCOPE
    assert "frozen in training mode" in found.message
    assert found.message.endswith("; " + INFERENCE_FIX)


def test_flag_defaulting_to_true_is_training_mode() -> None:
    flag = Flag("model/is_training", True, constant=False)
    found = _only(layer_findings(_layer("conditional", flag)), "training-mode")
    assert found.severity == Severity.ERROR
    assert found.layer == SCOPE
    assert found.message.startswith("flag model/is_training defaults to True")
    # The stage's own, more precise fix replaces the catalog's.
    assert found.message.endswith(f"; give it a False default or {INFERENCE_FIX}")


def test_flag_without_default_is_conditional_mode() -> None:
    flag = Flag("is_training", None, constant=False)
    found = _only(layer_findings(_layer("conditional", flag)), "conditional-mode")
    assert found.severity == Severity.WARNING
    assert found.layer == SCOPE
    assert found.message.startswith("flag is_training has no default")
    assert found.message.endswith(f"; feed is_training=False at inference or {INFERENCE_FIX}")


def test_conditional_mode_without_a_flag_has_no_mode_finding() -> None:
    assert layer_findings(_layer("conditional", None)) == []


@pytest.mark.parametrize("role", ["gamma", "beta", "moving_mean", "moving_variance"])
def test_nonfinite_values_in_any_role(role: Role) -> None:
    values = _healthy()[role].value
    assert values is not None
    bad = values.copy()
    bad[0], bad[2] = np.nan, np.inf
    found = _only(layer_findings(_layer(**{role: _const(bad)})), "nonfinite-stats")
    assert found.severity == Severity.ERROR
    assert found.layer == SCOPE
    assert found.message.startswith(f"{role} holds NaN/Inf in 2 of 3 values")


def test_nonfinite_counted_once_per_role() -> None:
    layer = _layer(gamma=_const([np.nan, 1, 1]), beta=_const([np.nan, -np.inf, 0]))
    findings = layer_findings(layer)
    assert _codes(findings) == ["nonfinite-stats", "nonfinite-stats"]
    assert findings[0].message.startswith("gamma holds NaN/Inf in 1 of 3")
    assert findings[1].message.startswith("beta holds NaN/Inf in 2 of 3")


def test_float16_values_are_checked_and_integers_are_skipped() -> None:
    half = _layer(moving_mean=_const([np.inf, 0, 1], np.float16))
    assert _codes(layer_findings(half)) == ["nonfinite-stats"]
    ints = _layer(gamma=_const([1, 2, 3], np.int32))
    assert layer_findings(ints) == []


def test_negative_variance_counts_channels_and_gives_the_minimum() -> None:
    layer = _layer(moving_variance=_const([0.5, -0.25, -3.0]))
    found = _only(layer_findings(layer), "negative-variance")
    assert found.severity == Severity.ERROR
    assert found.layer == SCOPE
    assert found.message.startswith("moving variance is negative in 2 of 3 channels (min -3)")


def test_negative_variance_beside_nan_reports_both() -> None:
    layer = _layer(moving_variance=_const([np.nan, -2.0, 1.0]))
    findings = layer_findings(layer)
    assert _codes(findings) == ["nonfinite-stats", "negative-variance"]
    assert "negative in 1 of 3 channels (min -2)" in findings[1].message


def test_untrained_stats() -> None:
    layer = _layer(moving_mean=_const([0, 0, 0]), moving_variance=_const([1, 1, 1]))
    found = _only(layer_findings(layer), "untrained-stats")
    assert found.severity == Severity.ERROR
    assert found.layer == SCOPE
    assert found.message.endswith("; " + CATALOG["untrained-stats"].fix)


@pytest.mark.parametrize(
    ("mean", "variance"),
    [([0, 0, 1e-7], [1, 1, 1]), ([0, 0, 0], [1, 1, 0.999]), ([], [])],
    ids=["mean-moved", "variance-moved", "empty"],
)
def test_stats_that_moved_are_not_untrained(mean: list[float], variance: list[float]) -> None:
    layer = _layer(moving_mean=_const(mean), moving_variance=_const(variance))
    assert "untrained-stats" not in _codes(layer_findings(layer))


def test_untrained_needs_both_statistics_as_values() -> None:
    layer = _layer(
        moving_mean=_const([0, 0, 0]), moving_variance=Param("variable", "model/bn1/var", None)
    )
    assert _codes(layer_findings(layer)) == ["not-frozen"]


def test_findings_come_in_stage_order() -> None:
    flag = Flag("is_training", None, constant=False)
    layer = _layer(
        "conditional",
        flag,
        beta=Param("variable", "model/bn1/beta", None),
        moving_mean=_const([0, 0, 0]),
        moving_variance=_const([1, 1, 1]),
    )
    findings = layer_findings(layer)
    assert _codes(findings) == ["not-frozen", "conditional-mode", "untrained-stats"]
    assert {f.layer for f in findings} == {SCOPE}


def test_every_layer_finding_takes_the_catalog_severity() -> None:
    layers = [
        _layer(gamma=Param("variable", "g", None)),
        _layer("training"),
        _layer("conditional", Flag("f", True, constant=False)),
        _layer("conditional", Flag("f", None, constant=False)),
        _layer(beta=_const([np.nan, 0, 0])),
        _layer(moving_variance=_const([-1, 1, 1])),
        _layer(moving_mean=_const([0, 0, 0]), moving_variance=_const([1, 1, 1])),
    ]
    findings = [f for layer in layers for f in layer_findings(layer)]
    assert sorted({f.code for f in findings}) == sorted(
        {
            "not-frozen", "training-mode", "conditional-mode", "nonfinite-stats",
            "negative-variance", "untrained-stats",
        }
    )  # fmt: skip
    for f in findings:
        assert f.severity == CATALOG[f.code].severity, f.code


def _scan(layers: list[BnLayer], missing: list[tuple[str, str]]) -> GraphScan:
    return GraphScan(layers=layers, missing_functions=missing)


def test_graph_with_layers_and_no_missing_function_has_no_finding() -> None:
    assert graph_findings(_scan([_layer()], [])) == []


def test_no_bn() -> None:
    (found,) = graph_findings(_scan([], []))
    assert found.code == "no-bn"
    assert found.severity == Severity.INFO == CATALOG["no-bn"].severity
    assert found.layer is None
    assert found.message.startswith("no batch-normalization layer found; ")


def test_missing_function_lists_every_call_and_suppresses_no_bn() -> None:
    missing = [("model/cond", "cond_true_12"), ("model/cond_1", "cond_false_13")]
    (found,) = graph_findings(_scan([], missing))
    assert found.code == "missing-function"
    assert found.severity == Severity.ERROR == CATALOG["missing-function"].severity
    assert found.layer is None
    assert found.message.startswith(
        "2 call(s) into functions the graph's library does not contain "
        "(model/cond -> cond_true_12, model/cond_1 -> cond_false_13)"
    )


def test_missing_function_beside_layers() -> None:
    findings = graph_findings(_scan([_layer()], [("call", "f")]))
    assert _codes(findings) == ["missing-function"]
    assert findings[0].message.startswith("1 call(s) into functions")
