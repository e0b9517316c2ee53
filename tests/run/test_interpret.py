"""Interpret a run: activation differences, the divergence rule, the first divergent layer and
what explains each divergence."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest

from bnaudit.findings import Code, Finding, Severity, finding
from bnaudit.report.results import (
    ActivationDiff,
    CompareReport,
    LayerComparison,
    OutputComparison,
)
from bnaudit.run.diff import BLOCK, activation_diff
from bnaudit.run.inputs import Inputs
from bnaudit.run.interpret import interpret
from bnaudit.run.plan import RunPlan
from bnaudit.run.references import Choice
from bnaudit.run.sides import Side

SAME = ActivationDiff(0.0, 0.0, 0.0, 1.0, False)
OFF = ActivationDiff(2.0, 0.5, 1.0, 0.9, True)


# activation_diff ------------------------------------------------------------------------------


def _f64(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float64)


def test_equal_tensors_do_not_differ() -> None:
    a = np.arange(12, dtype=np.float32).reshape(3, 4) - 5
    diff = activation_diff(a, a.copy(), 1e-5, 1e-5)
    assert (diff.max_abs_diff, diff.max_rel_diff, diff.mean_abs_diff) == (0.0, 0.0, 0.0)
    assert diff.cosine == pytest.approx(1.0) and not diff.divergent


def test_shifted_tensor() -> None:
    theirs = np.array([[1.0, 2.0], [4.0, -8.0]], dtype=np.float32)
    ours = theirs + np.float32(0.5)
    diff = activation_diff(ours, theirs, 1e-5, 1e-5)
    assert diff.max_abs_diff == pytest.approx(0.5)
    assert diff.max_rel_diff == pytest.approx(0.5)  # 0.5 / |1.0|, the smallest reference value
    assert diff.mean_abs_diff == pytest.approx(0.5)
    x, y = ours.astype(np.float64).ravel(), theirs.astype(np.float64).ravel()
    assert diff.cosine == pytest.approx(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))
    assert diff.divergent


def test_relative_difference_is_against_the_reference() -> None:
    diff = activation_diff(_f64(3.0, 1.0), _f64(2.0, 1.0), 1e-5, 1e-5)
    assert diff.max_rel_diff == pytest.approx(0.5)  # |3 - 2| / |2|, not / |3|
    near_zero = activation_diff(_f64(1e-3), _f64(0.0), 1e-5, 1e-5)
    assert near_zero.max_rel_diff == pytest.approx(1e-3 / 1e-12)  # floored, never a division by 0


def test_nan_against_nan_counts_as_equal() -> None:
    ours = _f64(np.nan, 1.0, 2.0)
    diff = activation_diff(ours, ours.copy(), 1e-5, 1e-5)
    assert (diff.max_abs_diff, diff.max_rel_diff, diff.mean_abs_diff) == (0.0, 0.0, 0.0)
    assert diff.cosine == pytest.approx(1.0)  # over the finite values
    assert not diff.divergent


def test_nan_against_a_number_is_infinitely_different() -> None:
    diff = activation_diff(_f64(np.nan, 1.0), _f64(0.0, 1.0), 1e-5, 1e-5)
    assert diff.max_abs_diff == math.inf and diff.max_rel_diff == math.inf
    assert diff.mean_abs_diff == math.inf and diff.divergent
    assert diff.cosine == pytest.approx(1.0)  # the finite pair (1, 1) alone


@pytest.mark.parametrize(
    ("ours", "theirs", "max_abs"),
    [
        ((math.inf, 1.0), (math.inf, 1.0), 0.0),
        ((-math.inf, 1.0), (-math.inf, 1.0), 0.0),
        ((math.inf, 1.0), (-math.inf, 1.0), math.inf),
        ((math.inf, 1.0), (5.0, 1.0), math.inf),
        ((2.0, 1.0), (math.inf, 1.0), math.inf),
    ],
)
def test_infinities(ours: tuple[float, ...], theirs: tuple[float, ...], max_abs: float) -> None:
    diff = activation_diff(_f64(*ours), _f64(*theirs), 1e-5, 1e-5)
    assert diff.max_abs_diff == max_abs
    assert diff.divergent == (max_abs > 0)


@pytest.mark.parametrize(("ours", "theirs"), [((2, 3), (3, 2)), ((6,), (2, 3)), ((2, 3), (2, 4))])
def test_shape_mismatch_diverges(ours: tuple[int, ...], theirs: tuple[int, ...]) -> None:
    diff = activation_diff(np.zeros(ours, np.float32), np.zeros(theirs, np.float32), 1.0, 1.0)
    assert diff.max_abs_diff == diff.max_rel_diff == diff.mean_abs_diff == math.inf
    assert math.isnan(diff.cosine) and diff.divergent


def test_cosine_of_zeros() -> None:
    zeros = np.zeros((2, 3), np.float32)
    both = activation_diff(zeros, zeros.copy(), 1e-5, 1e-5)
    assert both.cosine == 1.0 and not both.divergent
    one = activation_diff(zeros, np.ones((2, 3), np.float32), 1e-5, 1e-5)
    assert one.cosine == 0.0
    assert one.max_abs_diff == 1.0 and one.max_rel_diff == 1.0 and one.divergent
    empty = activation_diff(np.zeros(0), np.zeros(0), 1e-5, 1e-5)
    assert (empty.max_abs_diff, empty.mean_abs_diff, empty.cosine) == (0.0, 0.0, 1.0)


def test_opposite_tensors_have_cosine_minus_one() -> None:
    diff = activation_diff(_f64(1.0, -2.0, 3.0), _f64(-1.0, 2.0, -3.0), 1e-5, 1e-5)
    assert diff.cosine == pytest.approx(-1.0)
    assert diff.max_abs_diff == pytest.approx(6.0) and diff.mean_abs_diff == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("ours", "theirs", "atol", "rtol", "divergent"),
    [
        # abs 0.1 > atol, but rel 1e-4 <= rtol: within tolerance
        ((1000.1,), (1000.0,), 1e-5, 1e-3, False),
        ((1000.1,), (1000.0,), 1e-5, 1e-5, True),
        # rel 1e5 > rtol, but abs 1e-7 <= atol: within tolerance
        ((1e-7,), (0.0,), 1e-5, 1e-5, False),
        # exceeding means strictly greater
        ((0.5,), (0.25,), 0.25, 0.5, False),
        ((0.5,), (0.25,), 0.2, 1.0, False),
        ((0.5,), (0.25,), 0.2, 0.5, True),
        # one element must exceed both: a large value off within rtol and a near-zero one
        # off within atol are no divergence, though the tensor's two maxima exceed both
        ((1000.1, 1e-7), (1000.0, 0.0), 1e-5, 1e-3, False),
        ((1000.1, 1e-7, 0.5), (1000.0, 0.0, 0.25), 1e-5, 1e-3, True),
    ],
)
def test_divergence_needs_both_atol_and_rtol_exceeded(
    ours: tuple[float, ...], theirs: tuple[float, ...], atol: float, rtol: float, divergent: bool
) -> None:
    assert activation_diff(_f64(*ours), _f64(*theirs), atol, rtol).divergent is divergent


def _fields(diff: ActivationDiff) -> list[float]:
    return [diff.max_abs_diff, diff.max_rel_diff, diff.mean_abs_diff, diff.cosine]


def test_blocks_give_the_same_numbers_as_one_pass() -> None:
    """Block-wise reduction, finite blocks and blocks with NaN mixed: same as one block."""
    rng = np.random.default_rng(0)
    theirs = rng.standard_normal(10).astype(np.float32)
    ours = theirs + rng.standard_normal(10).astype(np.float32) * np.float32(0.1)
    ours[5] = theirs[5] = np.nan  # block [4:8] takes the masked path, the others the fast one
    ours[9] = theirs[9] + np.float32(3.0)  # the largest difference, in the last, short block
    whole = activation_diff(ours, theirs, 1e-5, 1e-5)
    blocked = activation_diff(ours, theirs, 1e-5, 1e-5, block=4)
    assert _fields(blocked) == pytest.approx(_fields(whole), rel=1e-12)
    assert blocked.max_abs_diff == pytest.approx(3.0, rel=1e-6)
    finite = ~np.isnan(theirs)
    delta = np.abs(ours.astype(np.float64) - theirs.astype(np.float64))
    assert blocked.mean_abs_diff == pytest.approx(delta[finite].sum() / 10)


def test_more_than_one_real_block() -> None:
    """A tensor past the 4M-element block: the maximum of one block, the mean of all."""
    size = BLOCK + 3
    theirs = np.ones(size, np.float32)
    ours = theirs.copy()
    ours[1] = 3.0  # first block: abs 2
    ours[-1] = theirs[-1] = np.nan  # the last block has NaN (masked path)
    ours[-2] = 1.5  # last block: abs 0.5
    diff = activation_diff(ours, theirs, 1e-5, 1e-5)
    assert diff.max_abs_diff == 2.0 and diff.max_rel_diff == 2.0
    assert diff.mean_abs_diff == pytest.approx(2.5 / size)
    assert diff.divergent


def test_float64_near_the_limit_gives_inf_without_warnings() -> None:
    """The fast path says so (`float64 inputs near the limit: inf, as below`): the difference
    of two huge float64 values of opposite signs is inf, with no RuntimeWarning on stderr."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        diff = activation_diff(_f64(1e308, 1.0), _f64(-1e308, 1.0), 1e-5, 1e-5)
    assert diff.max_abs_diff == math.inf and diff.divergent


def test_cosine_of_identical_large_float64_tensors_is_one() -> None:
    x = _f64(1e200, -3e199, 1.0)
    diff = activation_diff(x, x.copy(), 1e-5, 1e-5)
    assert diff.max_abs_diff == 0.0 and not diff.divergent
    assert diff.cosine == pytest.approx(1.0)


# interpret ------------------------------------------------------------------------------------


def _row(scope: str, *codes: Code) -> LayerComparison:
    return LayerComparison(
        name=f"{scope}/FusedBatchNormV3",
        scope=scope,
        op="FusedBatchNormV3",
        mode="conditional" if "conditional-mode" in codes else "inference",
        match_method="exact",
        checkpoint_scope=scope,
        stats={},
        findings=tuple(finding(code, f"{code} seen in {scope}", scope) for code in codes),
    )


def _plan(
    rows: list[LayerComparison],
    outputs: tuple[str, ...] = ("output",),
    switches: dict[str, Any] | None = None,
    notes: tuple[str, ...] = (),
    warnings: tuple[str, ...] = (),
    flags: dict[str, str] | None = None,
) -> RunPlan:
    inputs = Inputs({"input": np.zeros((2, 3), np.float32)}, switches or {}, warnings)
    tensors = tuple(f"{n}:0" for n in [*(r.name for r in rows), *outputs])
    return RunPlan(
        choice=Choice("patched", "asked for with --reference patched"),
        inputs=inputs,
        rows=tuple(rows),
        outputs=outputs,
        tensors=tensors,
        frozen=Side(None, dict(inputs.arrays), "frozen graph"),
        reference=Side(None, dict(inputs.arrays), "reference"),
        notes=notes,
        flags=flags or {},
    )


def _report(rows: list[LayerComparison], *graph_findings: Finding) -> CompareReport:
    return CompareReport(
        checkpoint="ckpt",
        graph="frozen.pb",
        layers=tuple(rows),
        findings=graph_findings,
        notes=("static note",),
    )


def _diffs(rows: list[LayerComparison], *states: ActivationDiff | None) -> dict[str, Any]:
    return {row.name: s for row, s in zip(rows, states, strict=True) if s is not None}


def _divergence(row: LayerComparison, code: Code = "activation-divergence") -> Finding:
    found = [f for f in row.findings if f.code == code]
    assert len(found) == 1, row.findings
    return found[0]


def test_clean_run_fills_activations_outputs_and_notes() -> None:
    rows = [_row("bn1"), _row("bn2")]
    plan = _plan(rows, outputs=("output", "logits"), notes=("plan note",), warnings=("warned",))
    diffs = {**_diffs(rows, SAME, None), "output": SAME}
    result = interpret(_report(rows), plan, diffs)
    assert result.first_divergent_layer is None and result.passed
    assert result.layers[0].activation == SAME and result.layers[0].findings == ()
    assert result.layers[1] == rows[1]  # no counterpart: untouched, activation None
    assert result.outputs == (OutputComparison("output", SAME),)
    assert result.reference == "patched"
    assert result.reference_reason == "asked for with --reference patched"
    assert result.notes == (
        "static note",
        "reference: patched (asked for with --reference patched)",
        "plan note",
        "bn2: the patched reference has no counterpart of this layer; its activation is not "
        "compared",
        "output logits: the patched reference has no counterpart; it is not compared",
        "warned",
    )
    assert result.findings == ()


def test_first_divergent_layer_and_what_the_later_ones_inherit() -> None:
    rows = [_row("bn1"), _row("bn2"), _row("bn3")]
    result = interpret(_report(rows), _plan(rows), _diffs(rows, SAME, OFF, OFF))
    assert result.first_divergent_layer == "bn2"
    assert result.layers[0].findings == () and result.layers[0].activation == SAME
    first = _divergence(result.layers[1])
    later = _divergence(result.layers[2], "inherited-divergence")
    assert first.layer == "bn2" and first.severity == Severity.ERROR
    assert "no static finding explains it" in first.message
    assert "(1 later layer inherits it)" in first.message
    assert later.layer == "bn3" and later.severity == Severity.INFO
    assert "its input already differs" in later.message
    assert "its own contribution is not measured" in later.message
    assert "fix the first divergent layer, bn2" in later.message
    assert [f.code for f in result.layers[2].findings] == ["inherited-divergence"]
    assert not result.passed


def test_a_layers_own_difference_decides_whether_it_diverges_itself() -> None:
    """Measured on the reference's input: bn2 changes nothing itself (it inherits, though
    no static finding says so), bn3 changes the result itself although bn1 came first."""
    rows = [_row("bn1", "stats-mismatch"), _row("bn2", "stats-mismatch"), _row("bn3")]
    own = _diffs(rows, OFF, SAME, OFF)
    result = interpret(_report(rows), _plan(rows), _diffs(rows, OFF, OFF, OFF), own)
    assert result.first_divergent_layer == "bn1"
    assert [layer.own_activation for layer in result.layers] == [OFF, SAME, OFF]
    assert "(1 later layer inherits it)" in _divergence(result.layers[0]).message
    inherited = _divergence(result.layers[1], "inherited-divergence")
    assert "on the reference's input it gives the reference's output" in inherited.message
    assert "no static finding explains it" in _divergence(result.layers[2]).message
    assert result.layers[1].status == "error"  # its stats-mismatch still stands
    assert result.findings == ()  # a layer diverges: no graph-level output finding


def test_a_layers_own_finding_beats_an_inherited_difference() -> None:
    rows = [_row("bn1", "stats-mismatch"), _row("bn2", "training-mode"), _row("bn3")]
    result = interpret(_report(rows), _plan(rows), _diffs(rows, OFF, OFF, OFF))
    assert result.first_divergent_layer == "bn1"
    messages = [_divergence(layer).message for layer in result.layers[:2]]
    assert "likely cause, stats-mismatch: stats-mismatch seen in bn1" in messages[0]
    assert "likely cause, training-mode: training-mode seen in bn2" in messages[1]
    inherited = _divergence(result.layers[2], "inherited-divergence")
    assert "fix the first divergent layer, bn1" in inherited.message
    assert "(1 later layer inherits it)" in messages[0]
    # the static findings are kept, the divergence added after them
    assert [f.code for f in result.layers[1].findings] == ["training-mode", "activation-divergence"]


@pytest.mark.parametrize(
    ("codes", "cause"),
    [
        (("unmatched", "stats-mismatch", "training-mode"), "training-mode"),
        (("missing-in-checkpoint", "stats-mismatch"), "stats-mismatch"),
        (("negative-variance", "folded-mismatch"), "folded-mismatch"),
        (("unmatched", "nonfinite-stats"), "nonfinite-stats"),
        (("untrained-stats", "unmatched"), "unmatched"),
    ],
)
def test_the_most_telling_static_finding_is_named(codes: tuple[Code, ...], cause: str) -> None:
    rows = [_row("bn1", *codes)]
    result = interpret(_report(rows), _plan(rows), _diffs(rows, OFF))
    assert f"likely cause, {cause}: {cause} seen in bn1" in _divergence(result.layers[0]).message


def test_untrained_stats_alone_explains_nothing() -> None:
    """A layer whose statistics were never trained but match the checkpoint: not a cause."""
    rows = [_row("bn1", "untrained-stats")]
    result = interpret(_report(rows), _plan(rows), _diffs(rows, OFF))
    assert "no static finding explains it" in _divergence(result.layers[0]).message


def test_a_flag_the_user_fed_true_explains_a_divergence() -> None:
    rows = [_row("bn1", "conditional-mode"), _row("bn2", "conditional-mode", "unmatched")]
    flags = {row.name: "is_training" for row in rows}
    fed_true = {"is_training": np.asarray(True), "dropout": np.asarray(False)}
    plan = _plan(rows, switches=fed_true, flags=flags)
    result = interpret(_report(rows), plan, _diffs(rows, OFF, OFF), _diffs(rows, OFF, OFF))
    for layer in result.layers:
        message = _divergence(layer).message
        assert "likely cause, your --feed: is_training fed True" in message
        assert "dropout" not in message  # fed False: not named
    fed_false = {"is_training": np.asarray(False)}
    plan = _plan(rows, switches=fed_false, flags=flags)
    result = interpret(_report(rows), plan, _diffs(rows, OFF, OFF), _diffs(rows, OFF, OFF))
    assert "no static finding explains it" in _divergence(result.layers[0]).message
    assert "likely cause, unmatched" in _divergence(result.layers[1]).message


def test_a_flag_fed_true_is_named_before_any_static_finding() -> None:
    """What the user fed is what the run measured: it comes first."""
    rows = [_row("bn1", "conditional-mode", "stats-mismatch")]
    switches = {"is_training": np.asarray(True)}
    plan = _plan(rows, switches=switches, flags={rows[0].name: "is_training"})
    result = interpret(_report(rows), plan, _diffs(rows, OFF))
    assert "likely cause, your --feed" in _divergence(result.layers[0]).message


def test_divergent_output_without_divergent_layer_is_a_graph_finding() -> None:
    rows = [_row("bn1"), _row("bn2")]
    static = finding("missing-in-graph", "the checkpoint's bn9 is not in the graph", "bn9")
    plan = _plan(rows, outputs=("output", "aux", "logits"))
    diffs = {**_diffs(rows, SAME, SAME), "output": OFF, "aux": SAME, "logits": OFF}
    result = interpret(_report(rows, static), plan, diffs)
    assert result.first_divergent_layer is None
    assert result.findings[0] == static
    assert len(result.findings) == 2
    added = result.findings[1]
    assert (added.code, added.layer, added.severity) == (
        "activation-divergence",
        None,
        Severity.ERROR,
    )
    assert "the final output output, logits differs from the reference" in added.message
    assert [o.name for o in result.outputs] == ["output", "aux", "logits"]
    assert not result.passed


def test_divergent_output_after_a_divergent_layer_adds_nothing() -> None:
    rows = [_row("bn1")]
    result = interpret(_report(rows), _plan(rows), {**_diffs(rows, OFF), "output": OFF})
    assert result.first_divergent_layer == "bn1" and result.findings == ()


def test_a_divergent_output_with_layers_left_uncompared_does_not_blame_outside_bn() -> None:
    """A reference without a counterpart of some BN layers (a `.keras` nested sub-model):
    their static findings may explain the output, so the message says so."""
    rows = [_row("bn1"), _row("bn2", "stats-mismatch")]
    diffs = {**_diffs(rows, SAME, None), "output": OFF}
    result = interpret(_report(rows), _plan(rows), diffs)
    (found,) = result.findings
    assert "1 BN layer(s) the reference has no counterpart of were not compared" in found.message
    assert "something outside BN" not in found.message
