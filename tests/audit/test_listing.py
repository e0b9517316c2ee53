"""`list_layers`, `layer_report` and `param_summary`: what `list-bn` reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import MODELS, expected

from bnaudit.audit.detect import BnLayer, Param
from bnaudit.audit.listing import layer_report, list_layers, param_summary
from bnaudit.audit.options import ListOptions
from bnaudit.audit.trace import Flag
from bnaudit.errors import BnauditError
from bnaudit.findings import Severity
from bnaudit.formats import protos
from bnaudit.report.results import FlagInfo, ParamSummary

UNTRAINED = MODELS / "tf1_untrained"
BARE_FLAG = MODELS / "tf1_bare_flag"


# param_summary.


def _param(values: object, dtype: object = np.float32) -> Param:
    return Param("const", "bn/gamma", np.asarray(values, dtype=dtype))  # type: ignore[call-overload]


def test_range_of_a_constant() -> None:
    assert param_summary(_param([0.5, -2.0, 3.25])) == ParamSummary("bn/gamma", "const", -2.0, 3.25)


def test_range_ignores_nan_and_inf() -> None:
    summary = param_summary(_param([np.nan, 1.0, np.inf, -np.inf, 3.0]))
    assert (summary.min, summary.max) == (1.0, 3.0)


def test_range_of_nothing_finite_is_unknown() -> None:
    assert param_summary(_param([np.nan, np.inf])) == ParamSummary("bn/gamma", "const", None, None)


def test_range_of_integers_is_given_as_floats() -> None:
    summary = param_summary(_param([3, -1, 7], np.int32))
    assert (summary.min, summary.max) == (-1.0, 7.0)
    assert isinstance(summary.min, float) and isinstance(summary.max, float)


@pytest.mark.parametrize(
    "value",
    [np.array([True, False]), np.array(["a", "b"]), np.array([], dtype=np.float32), None],
    ids=["bool", "str", "empty", "none"],
)
def test_no_range_without_numeric_values(value: np.ndarray | None) -> None:
    param = Param("const", "bn/beta", value)
    assert param_summary(param) == ParamSummary("bn/beta", "const", None, None)


def test_summary_keeps_kind_and_source() -> None:
    assert param_summary(Param("batch", "batch statistics", None)) == ParamSummary(
        "batch statistics", "batch", None, None
    )
    assert param_summary(Param("absent", "absent", None)) == ParamSummary(
        "absent", "absent", None, None
    )


# layer_report.


def _layer(flag: Flag | None) -> BnLayer:
    return BnLayer(
        name="model/bn1/cond/Merge",
        scope="model/bn1",
        op="FusedBatchNormV3",
        mode="conditional",
        flag=flag,
        epsilon=0.001,
        channels=2,
        data_format="NHWC",
        params={
            "gamma": _param([0.5, 1.5]),
            "beta": Param("absent", "absent", None),
            "moving_mean": _param([0.0, 0.0]),
            "moving_variance": _param([1.0, 1.0]),
        },
        position=3,
        core_nodes=("a", "b"),
    )


def test_layer_report_carries_the_layer_and_its_findings() -> None:
    report = layer_report(_layer(Flag("is_training", None, constant=False)))
    assert (report.name, report.scope, report.op, report.mode) == (
        "model/bn1/cond/Merge",
        "model/bn1",
        "FusedBatchNormV3",
        "conditional",
    )
    assert report.flag == FlagInfo("is_training", None)
    assert (report.epsilon, report.channels, report.data_format) == (0.001, 2, "NHWC")
    assert list(report.params) == ["gamma", "beta", "moving_mean", "moving_variance"]
    assert report.params["gamma"] == ParamSummary("bn/gamma", "const", 0.5, 1.5)
    assert report.params["beta"] == ParamSummary("absent", "absent", None, None)
    assert [f.code for f in report.findings] == ["conditional-mode", "untrained-stats"]
    assert {f.layer for f in report.findings} == {"model/bn1"}
    assert report.status == "error"


def test_layer_report_without_a_flag() -> None:
    assert layer_report(_layer(None)).flag is None


# list_layers on fixtures.


def test_list_layers_matches_the_fixture() -> None:
    data = expected(UNTRAINED)
    want = data["list_bn"]
    report = list_layers(UNTRAINED / data["graph"])
    assert report.graph == str(UNTRAINED / "frozen.pb")
    assert [layer.scope for layer in report.layers] == [x["scope"] for x in want["layers"]]
    assert [[f.code for f in layer.findings] for layer in report.layers] == [
        x["findings"] for x in want["layers"]
    ]
    assert [(layer.channels, layer.epsilon) for layer in report.layers] == [
        (x["channels"], x["epsilon"]) for x in want["layers"]
    ]
    assert report.findings == ()
    assert report.fail_on == Severity.ERROR
    assert report.passed is False


def test_fail_on_is_respected() -> None:
    graph = UNTRAINED / "frozen.pb"
    assert list_layers(graph, ListOptions(fail_on=None)).passed is True
    assert list_layers(graph, ListOptions(fail_on=Severity.ERROR)).passed is False
    bare = BARE_FLAG / "frozen.pb"  # conditional-mode: warnings only
    assert list_layers(bare).passed is True
    warned = list_layers(bare, ListOptions(fail_on=Severity.WARNING))
    assert warned.fail_on == Severity.WARNING
    assert warned.passed is False


def test_graph_without_bn_reports_no_bn(tmp_path: Path) -> None:
    graph = protos.GraphDef()
    graph.node.add(name="x", op="Placeholder")
    graph.node.add(name="y", op="Relu", input=["x"])
    path = tmp_path / "plain.pb"
    path.write_bytes(graph.SerializeToString())
    report = list_layers(path)
    assert report.layers == ()
    assert [f.code for f in report.findings] == ["no-bn"]
    assert report.passed is True  # info only
    assert list_layers(path, ListOptions(fail_on=Severity.INFO)).passed is False


def test_list_layers_raises_on_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BnauditError, match="no such file"):
        list_layers(tmp_path / "missing.pb")
