"""Reports built by hand for the renderer tests: every renderer is a pure function of these."""

from __future__ import annotations

from bnaudit.findings import Finding, Severity
from bnaudit.report.results import (
    ActivationDiff,
    CompareReport,
    FlagInfo,
    LayerComparison,
    LayerReport,
    ListReport,
    ParamSummary,
    StatDiff,
)


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


def list_report() -> ListReport:
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


def divergent_compare_report() -> CompareReport:
    """Two rows: one whose statistics differ and whose activations diverge, one clean."""
    mismatch = Finding("stats-mismatch", Severity.ERROR, "frozen from another checkpoint", "bn1")
    diverges = Finding("activation-divergence", Severity.ERROR, "output differs", "bn1")
    divergent = LayerComparison(
        name="bn1/FusedBatchNormV3",
        scope="bn1",
        op="FusedBatchNormV3",
        mode="inference",
        match_method="exact",
        checkpoint_scope="bn1",
        stats={"moving_mean": StatDiff(0.25, 0.5), "gamma": StatDiff(None, None)},
        findings=(mismatch, diverges),
        activation=ActivationDiff(0.5, 2.0, 0.1, 0.9, divergent=True),
        own_activation=ActivationDiff(0.375, 1.5, 0.1, 0.95, divergent=True),
    )
    clean = LayerComparison(
        name="bn2/FusedBatchNormV3",
        scope="bn2",
        op="FusedBatchNormV3",
        mode="inference",
        match_method="exact",
        checkpoint_scope="bn2",
        stats={"moving_mean": StatDiff(0.0, 0.0)},
        findings=(),
        activation=ActivationDiff(1e-7, 1e-7, 1e-8, 1.0, divergent=False),
    )
    return CompareReport(
        checkpoint="ckpt",
        graph="g.pb",
        layers=(divergent, clean),
        findings=(),
        first_divergent_layer="bn1",
        reference="patched",
        reference_reason="asked for",
    )


def static_compare_report() -> CompareReport:
    """One row whose statistics differ, without a run (no activation columns)."""
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
    return CompareReport(checkpoint="ckpt", graph="g.pb", layers=(row,), findings=())
