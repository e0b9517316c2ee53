"""Renderers are pure functions of a report: golden table, JSON contract, grouped findings."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from bnaudit.findings import Finding, Severity
from bnaudit.report.results import FlagInfo, LayerReport, ListReport, ParamSummary
from bnaudit.report.table import render_table
from bnaudit.report.text import render_json, render_markdown

GOLDEN = Path(__file__).parent / "golden"


def _layer(scope: str, findings: tuple[Finding, ...], flag: FlagInfo | None) -> LayerReport:
    const = ParamSummary(f"{scope}/moving_mean", "const", 0.0, 0.0)
    return LayerReport(
        name=f"{scope}/cond/Merge",
        scope=scope,
        op="FusedBatchNormV3",
        mode="conditional" if flag else "inference",
        flag=flag,
        epsilon=0.001,
        channels=4,
        data_format="NHWC",
        params={
            "gamma": ParamSummary(f"{scope}/gamma", "const", 0.5, 1.5),
            "beta": ParamSummary("absent", "absent", None, None),
            "moving_mean": const,
            "moving_variance": ParamSummary(f"{scope}/moving_variance", "const", 1.0, 1.0),
        },
        findings=findings,
    )


def _report() -> ListReport:
    untrained = "moving statistics never updated"
    flag = FlagInfo("is_training", None)
    return ListReport(
        graph="model.pb",
        layers=(
            _layer(
                "model/bn1",
                (Finding("untrained-stats", Severity.ERROR, untrained, "model/bn1"),),
                None,
            ),
            _layer(
                "model/bn2",
                (
                    Finding("untrained-stats", Severity.ERROR, untrained, "model/bn2"),
                    Finding("conditional-mode", Severity.WARNING, "feed it", "model/bn2"),
                ),
                flag,
            ),
        ),
        findings=(),
    )


def test_table_matches_golden() -> None:
    console = Console(file=io.StringIO(), width=100, color_system=None)
    console.print(render_table(_report()))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert text == (GOLDEN / "list_table.txt").read_text()


def test_json_contract() -> None:
    data = json.loads(render_json(_report()))
    assert data["schema_version"] == 1 and data["command"] == "list-bn"
    assert data["passed"] is False
    first, second = data["layers"]
    assert set(first) == {
        "name", "scope", "op", "mode", "flag", "epsilon", "channels", "data_format",
        "params", "status", "findings",
    }  # fmt: skip
    assert first["params"]["beta"] == {"source": "absent", "min": None, "max": None}
    assert second["flag"] == {"name": "is_training", "default": None}
    assert second["status"] == "error"
    assert [f["code"] for f in second["findings"]] == ["untrained-stats", "conditional-mode"]


def test_same_finding_on_many_layers_is_said_once() -> None:
    text = render_markdown(_report())
    assert text.count("moving statistics never updated") == 1
    assert "`model/bn1`, `model/bn2`" in text


def test_passing_with_threshold_never() -> None:
    report = ListReport(graph="g.pb", layers=_report().layers, findings=(), fail_on=None)
    assert json.loads(render_json(report))["passed"] is True


def test_junit_has_one_case_per_layer_and_fails_on_errors() -> None:
    import xml.etree.ElementTree as ET

    from bnaudit.report.text import render_junit

    suite = ET.fromstring(render_junit(_report()))
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["model/bn1", "model/bn2", "graph"]
    assert suite.get("failures") == "2"
    failure = cases[1].find("failure")
    assert failure is not None
    assert failure.get("message") == "conditional-mode, untrained-stats"


def test_compare_markdown_and_table_show_divergent_rows() -> None:
    from bnaudit.report.results import CompareReport, LayerComparison, StatDiff

    mismatch = Finding("stats-mismatch", Severity.ERROR, "frozen from another checkpoint", "bn1")
    row = LayerComparison(
        name="bn1/FusedBatchNormV3",
        scope="bn1",
        op="FusedBatchNormV3",
        mode="inference",
        match_method="exact",
        checkpoint_scope="bn1",
        stats={"moving_mean": StatDiff(0.25, 0.5), "gamma": StatDiff(None, None)},
        findings=(mismatch,),
    )
    report = CompareReport(checkpoint="ckpt", graph="g.pb", layers=(row,), findings=())
    text = render_markdown(report)
    assert "| `bn1` | inference | exact | 0.25 | - | missing | - | error |" in text
    console = Console(file=io.StringIO(), width=100, color_system="truecolor")
    console.print(render_table(report))
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert "missing γ" in output and "\x1b[" in output  # the row is styled
    assert json.loads(render_json(report))["layers"][0]["stats"]["gamma"] == {
        "max_abs_diff": None,
        "max_rel_diff": None,
    }
