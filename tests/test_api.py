"""The public API: `list_bn` and `compare` give the fixtures' verdicts, without TensorFlow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import MODELS, expected, fixture_dirs

import bnaudit.audit.compare
from bnaudit.api import (
    BnauditError,
    CompareOptions,
    ListOptions,
    RunOptions,
    compare,
    list_bn,
)
from bnaudit.errors import UsageError
from bnaudit.findings import Severity

FOLDERS = fixture_dirs()
READABLE = [f for f in FOLDERS if expected(f)["list_bn"]["exit_code"] in (0, 1)]
BROKEN = [f for f in FOLDERS if expected(f)["list_bn"]["exit_code"] == 3]
COMPARES = [(f, c) for f in FOLDERS for c in expected(f)["compare"]]
TF1 = MODELS / "tf1_fused_cond"


def test_fixtures_were_found() -> None:
    assert len(READABLE) >= 20 and len(BROKEN) == 5 and len(COMPARES) >= 40


@pytest.mark.parametrize("folder", READABLE, ids=[f.name for f in READABLE])
def test_list_bn_verdict_matches_the_fixture(folder: Path) -> None:
    data = expected(folder)
    want = data["list_bn"]
    report = list_bn(folder / data["graph"])
    assert report.passed is (want["exit_code"] == 0)
    assert [layer.scope for layer in report.layers] == [x["scope"] for x in want["layers"]]
    assert [[f.code for f in layer.findings] for layer in report.layers] == [
        x["findings"] for x in want["layers"]
    ]
    assert [f.code for f in report.findings] == want["findings"]


@pytest.mark.parametrize("folder", BROKEN, ids=[f.name for f in BROKEN])
def test_list_bn_raises_on_the_broken_fixtures(folder: Path) -> None:
    data = expected(folder)
    with pytest.raises(BnauditError, match=data["list_bn"]["error_contains"]):
        list_bn(folder / data["graph"])


@pytest.mark.parametrize(
    ("folder", "case"), COMPARES, ids=[f"{f.name}:{c['checkpoint']}" for f, c in COMPARES]
)
def test_static_compare_verdict_matches_the_fixture(folder: Path, case: dict[str, Any]) -> None:
    data = expected(folder)
    report = compare(folder / case["checkpoint"], folder / data["graph"], run=None)
    assert report.passed is (case["exit_code"] == 0)
    assert sorted({f.code for f in report.all_findings}) == sorted(set(case["findings"]))
    if "layer_findings" in case:  # the static codes of each layer, keyed by scope
        assert {
            layer.scope: sorted({f.code for f in layer.findings}) for layer in report.layers
        } == case["layer_findings"]
    assert report.first_divergent_layer is None and report.reference is None


def test_options_reach_the_verdict() -> None:
    untrained = MODELS / "tf1_untrained"
    assert list_bn(untrained / "frozen.pb", ListOptions(fail_on=None)).passed is True
    report = compare(
        untrained / "ckpt" / "model.ckpt-20",
        untrained / "frozen.pb",
        CompareOptions(fail_on=None),
    )
    assert report.passed is True and report.fail_on is None
    bare = MODELS / "tf1_bare_flag"
    strict = CompareOptions(fail_on=Severity.WARNING)
    assert compare(bare / "ckpt" / "model.ckpt-20", bare / "frozen.pb", strict).passed is False


def test_static_compare_never_imports_tensorflow() -> None:
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from bnaudit.api import compare, list_bn\n"
        f"folder = Path({str(TF1)!r})\n"
        "report = compare(folder / 'ckpt', folder / 'frozen.pb', run=None)\n"
        "assert report.passed and len(report.layers) == 2, report\n"
        "assert list_bn(folder / 'frozen.pb').passed\n"
        "print('tensorflow' in sys.modules, 'bnaudit.audit.compare' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]


@pytest.mark.parametrize(
    "target",
    [
        TF1 / "frozen.pb",
        TF1 / "ckpt" / "model.ckpt-20.index",
        TF1 / "ckpt" / "new.npz",
    ],
    ids=["model", "checkpoint-file", "inside-checkpoint-dir"],
)
def test_save_inputs_over_an_input_is_refused_before_anything_runs(
    target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def audit(*args: object, **kwargs: object) -> None:
        raise AssertionError("the static audit ran before the output was checked")

    monkeypatch.setattr(bnaudit.audit.compare, "audit", audit)
    before = target.read_bytes() if target.exists() else None
    with pytest.raises(UsageError, match="would write over the input"):
        compare(TF1 / "ckpt", TF1 / "frozen.pb", run=RunOptions(save_inputs=target))
    assert (target.read_bytes() if target.exists() else None) == before
