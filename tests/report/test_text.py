"""Text renderers are pure functions of a report: JSON contract, Markdown, JUnit."""

from __future__ import annotations

import json

from sample_reports import divergent_compare_report, list_report, static_compare_report

from bnaudit.report.results import ListReport
from bnaudit.report.text import render_json, render_markdown


def test_json_contract() -> None:
    data = json.loads(render_json(list_report()))
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
    text = render_markdown(list_report())
    assert text.count("moving statistics never updated") == 1
    assert "`model/bn1`, `model/bn2`" in text


def test_passing_with_threshold_never() -> None:
    report = ListReport(graph="g.pb", layers=list_report().layers, findings=(), fail_on=None)
    assert json.loads(render_json(report))["passed"] is True


def test_junit_has_one_case_per_layer_and_fails_on_errors() -> None:
    import xml.etree.ElementTree as ET

    from bnaudit.report.text import render_junit

    suite = ET.fromstring(render_junit(list_report()))
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["model/bn1", "model/bn2", "graph"]
    assert suite.get("failures") == "2"
    failure = cases[1].find("failure")
    assert failure is not None
    assert failure.get("message") == "conditional-mode, untrained-stats"


def test_static_compare_markdown_row() -> None:
    text = render_markdown(static_compare_report())
    assert "| `bn1` | inference | exact | 0.25 | - | missing | - | error |" in text


def test_compare_markdown_bolds_divergent_rows_only() -> None:
    text = render_markdown(divergent_compare_report())
    assert (
        "| **`bn1`** | **inference** | **exact** | **0.25** | **-** | **missing** | **-** "
        "| **0.5** | **0.375** | **error** |" in text
    )
    assert "| `bn2` | inference | exact | 0 | - | - | - | 1e-07 | - | ok |" in text
    assert "first divergent layer: bn1; the static audit says: stats-mismatch" in text


def test_static_compare_json_keeps_missing_values_null() -> None:
    assert json.loads(render_json(static_compare_report()))["layers"][0]["stats"]["gamma"] == {
        "max_abs_diff": None,
        "max_rel_diff": None,
    }


def test_compare_json_keeps_missing_values_null() -> None:
    data = json.loads(render_json(divergent_compare_report()))
    assert data["layers"][0]["stats"]["gamma"] == {"max_abs_diff": None, "max_rel_diff": None}
    assert data["layers"][0]["activation"]["cosine"] == 0.9
    assert data["first_divergent_layer"] == "bn1"
