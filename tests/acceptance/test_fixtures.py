"""The backbone: every committed fixture gives the verdict it was built to have."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import expected, fixture_dirs

from bnaudit.api import list_bn
from bnaudit.cli import main
from bnaudit.report.results import LayerReport

LIST_CASES = [d for d in fixture_dirs() if "list_bn" in expected(d)]


def _ids(folders: list[Path]) -> list[str]:
    return [f.name for f in folders]


@pytest.mark.parametrize("folder", LIST_CASES, ids=_ids(LIST_CASES))
def test_list_bn_exit_code_and_output(folder: Path, runner: CliRunner) -> None:
    want = expected(folder)["list_bn"]
    result = runner.invoke(
        main, ["list-bn", str(folder / expected(folder)["graph"]), "--format", "json"]
    )
    assert result.exit_code == want["exit_code"], result.stderr
    assert "Traceback" not in result.stderr
    if want["exit_code"] == 3:
        assert result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1
        assert want.get("error_contains", "").lower() in result.stderr.lower()
        return
    report = json.loads(result.stdout)
    assert report["schema_version"] == 1 and report["command"] == "list-bn"
    assert report["passed"] is (want["exit_code"] == 0)
    assert sorted(f["code"] for f in report["findings"]) == sorted(want.get("findings", []))


@pytest.mark.parametrize(
    "folder",
    [d for d in LIST_CASES if expected(d)["list_bn"]["exit_code"] != 3],
    ids=_ids([d for d in LIST_CASES if expected(d)["list_bn"]["exit_code"] != 3]),
)
def test_list_bn_layers(folder: Path) -> None:
    want = expected(folder)["list_bn"]
    report = list_bn(folder / expected(folder)["graph"])
    assert [layer.scope for layer in report.layers] == [w["scope"] for w in want["layers"]]
    for layer, wanted in zip(report.layers, want["layers"], strict=True):
        _check_layer(layer, wanted)


def _check_layer(layer: LayerReport, wanted: dict) -> None:  # type: ignore[type-arg]
    where = layer.scope
    assert layer.op == wanted["op"], where
    assert layer.mode == wanted["mode"], where
    flag = None if layer.flag is None else {"name": layer.flag.name, "default": layer.flag.default}
    assert flag == wanted.get("flag"), where
    if wanted.get("epsilon") is not None:
        assert layer.epsilon == pytest.approx(wanted["epsilon"], rel=1e-6), where
    if wanted.get("channels") is not None:
        assert layer.channels == wanted["channels"], where
    if layer.op == "decomposed":
        # Fixtures write NHWC for channels-last decompositions; bnaudit says channels_last,
        # since a decomposition on a 2-D input has no H and W.
        layouts = {"NHWC": "channels_last", "NCHW": "channels_first"}
        want_format = layouts.get(wanted.get("data_format"), wanted.get("data_format"))
        assert layer.data_format == want_format, where
    elif wanted.get("data_format") is not None:
        assert layer.data_format == wanted["data_format"], where
    kinds = {role: p.kind for role, p in layer.params.items()}
    assert kinds == wanted["params"], where
    assert sorted(f.code for f in layer.findings) == sorted(wanted.get("findings", [])), where


COMPARE_CASES = [
    (folder, case) for folder in fixture_dirs() for case in expected(folder).get("compare", [])
]


@pytest.mark.parametrize(
    ("folder", "case"),
    COMPARE_CASES,
    ids=[f"{f.name}:{c['checkpoint']}" for f, c in COMPARE_CASES],
)
def test_compare_static(folder: Path, case: dict, runner: CliRunner) -> None:  # type: ignore[type-arg]
    graph = folder / expected(folder)["graph"]
    args = ["compare", str(folder / case["checkpoint"]), str(graph), "--no-run", "--format", "json"]
    result = runner.invoke(main, args)
    assert "Traceback" not in result.stderr
    assert result.exit_code == case["exit_code"], result.stdout + result.stderr
    if case["exit_code"] == 3:
        assert case.get("error_contains", "").lower() in result.stderr.lower()
        return
    report = json.loads(result.stdout)
    assert report["command"] == "compare" and report["schema_version"] == 1
    assert _codes(report) == set(case["findings"])
    assert _layer_codes(report) == case["layer_findings"]
    if case["exit_code"] == 0:
        severities = {f["severity"] for layer in report["layers"] for f in layer["findings"]}
        assert "error" not in severities
    for layer in report["layers"]:
        assert layer["match"]["method"] is not None, layer["scope"]
        assert layer["activation"] is None


def _codes(report: dict) -> set[str]:  # type: ignore[type-arg]
    """Every finding code of a compare report, graph level and layer level together."""
    codes = {f["code"] for f in report["findings"]}
    return codes | {f["code"] for layer in report["layers"] for f in layer["findings"]}


def _layer_codes(report: dict) -> dict[str, list[str]]:  # type: ignore[type-arg]
    """Each reported layer's finding codes, sorted (a code twice on one layer shows)."""
    return {
        layer["scope"]: sorted(f["code"] for f in layer["findings"]) for layer in report["layers"]
    }


RUN_CASES = [
    (folder, case, reference)
    for folder, case in COMPARE_CASES
    if "first_divergent_layer" in case
    for reference in ("patched", "auto")
]


@pytest.mark.parametrize(
    ("folder", "case", "reference"),
    RUN_CASES,
    ids=[f"{f.name}:{c['checkpoint']}:{r}" for f, c, r in RUN_CASES],
)
def test_compare_run(folder: Path, case: dict, reference: str, runner: CliRunner) -> None:  # type: ignore[type-arg]
    """Running both graphs names the first divergent layer the fixture was built to have,
    with exactly the findings it was built to have.

    With the patched reference, and with the one `auto` picks (`meta` beside a TF1 Saver
    checkpoint, `keras` for a `.keras` file): both must agree with how the fixture was made.
    """
    graph = folder / expected(folder)["graph"]
    args = [
        *("compare", str(folder / case["checkpoint"]), str(graph)),
        *("--quiet", "--format", "json", "--reference", reference),
    ]
    result = runner.invoke(main, args)
    assert "Traceback" not in result.stderr
    want_code = case.get("run_exit_code", case["exit_code"])
    assert result.exit_code == want_code, result.stdout + result.stderr
    if want_code == 3:
        assert len(result.stderr.strip().splitlines()) == 1
        assert case.get("run_error_contains", case.get("error_contains", "")) in result.stderr
        return
    report = json.loads(result.stdout)
    assert report["first_divergent_layer"] == case["first_divergent_layer"]
    assert _codes(report) == set(case["run_findings"])
    assert _layer_codes(report) == case["run_layer_findings"]
    skipped = set(case.get("not_compared", []))  # inside a loop: no single output
    for layer in report["layers"]:  # folded BN included: the reference folds it again
        assert (layer["activation"] is None) is (layer["scope"] in skipped), layer["scope"]
