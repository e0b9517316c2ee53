"""Findings a frozen graph shows on its own: mode, statistics health, broken references."""

from __future__ import annotations

import numpy as np

from bnaudit.audit.detect import BnLayer, GraphScan
from bnaudit.findings import Finding, Severity

UPDATE_OPS_FIX = (
    "build train_op under tf.control_dependencies(tf.compat.v1.get_collection("
    "tf.compat.v1.GraphKeys.UPDATE_OPS)) (Keras: train with fit or training=True), "
    "then freeze again"
)
INFERENCE_FIX = "freeze with training=False (Keras: call the model with training=False)"


def layer_findings(layer: BnLayer) -> list[Finding]:
    """Mode and statistics problems of one layer."""
    findings = [*_frozen_findings(layer), *_mode_findings(layer), *_stat_findings(layer)]
    return [Finding(f.code, f.severity, f.message, layer.scope) for f in findings]


def _frozen_findings(layer: BnLayer) -> list[Finding]:
    variables = [role for role, param in layer.params.items() if param.kind == "variable"]
    if not variables:
        return []
    return [
        Finding(
            "not-frozen",
            Severity.WARNING,
            f"{', '.join(variables)} are read from variables: the graph is not frozen, so "
            "its values are whatever checkpoint gets restored at run time; freeze it with "
            "convert_variables_to_constants(_v2) and audit the .pb (or compare it with the "
            "checkpoint)",
        )
    ]


def _mode_findings(layer: BnLayer) -> list[Finding]:
    flag = layer.flag
    if layer.mode == "training":
        return [
            Finding(
                "training-mode",
                Severity.ERROR,
                "normalizes every batch with its own statistics: the graph was frozen in "
                f"training mode, so a batch of one gives garbage; {INFERENCE_FIX}",
            )
        ]
    if layer.mode != "conditional" or flag is None:
        return []
    if flag.default is True:
        return [
            Finding(
                "training-mode",
                Severity.ERROR,
                f"flag {flag.name} defaults to True, so the deployed graph normalizes with "
                f"batch statistics; give it a False default or {INFERENCE_FIX}",
            )
        ]
    if flag.default is None:
        return [
            Finding(
                "conditional-mode",
                Severity.WARNING,
                f"flag {flag.name} has no default: whoever runs the graph chooses batch or "
                f"moving statistics; feed {flag.name}=False at inference or {INFERENCE_FIX}",
            )
        ]
    return []


def _stat_findings(layer: BnLayer) -> list[Finding]:
    findings = []
    mean = layer.params["moving_mean"].value
    variance = layer.params["moving_variance"].value
    for role, param in layer.params.items():
        value = param.value
        if value is None or not np.issubdtype(value.dtype, np.floating):
            continue
        bad = int(np.count_nonzero(~np.isfinite(value)))
        if bad:
            findings.append(
                Finding(
                    "nonfinite-stats",
                    Severity.ERROR,
                    f"{role} holds NaN/Inf in {bad} of {value.size} values: training "
                    "diverged or the checkpoint is corrupt; freeze from a healthy checkpoint",
                )
            )
    if variance is not None and np.any(variance < 0):
        count = int(np.count_nonzero(variance < 0))
        findings.append(
            Finding(
                "negative-variance",
                Severity.ERROR,
                f"moving variance is negative in {count} of {variance.size} channels "
                f"(min {float(np.nanmin(variance)):.4g}): the statistics are corrupt; "
                "freeze from a healthy checkpoint",
            )
        )
    if (
        mean is not None
        and variance is not None
        and mean.size
        and np.all(mean == 0)
        and np.all(variance == 1)
    ):
        findings.append(
            Finding(
                "untrained-stats",
                Severity.ERROR,
                "moving mean is exactly 0 and moving variance exactly 1 in every channel: "
                f"the moving statistics never updated; {UPDATE_OPS_FIX}",
            )
        )
    return findings


def graph_findings(scan: GraphScan) -> list[Finding]:
    """Problems of the graph as a whole."""
    findings = []
    if scan.missing_functions:
        calls = ", ".join(f"{node} -> {function}" for node, function in scan.missing_functions)
        findings.append(
            Finding(
                "missing-function",
                Severity.ERROR,
                f"{len(scan.missing_functions)} call(s) into functions the graph's library "
                f"does not contain ({calls}); the graph cannot run, and BN inside them cannot "
                "be checked (optimize_for_inference drops the library): freeze again and skip "
                "that step",
            )
        )
    if not scan.layers and not scan.missing_functions:
        findings.append(
            Finding(
                "no-bn",
                Severity.INFO,
                "no batch-normalization layer found; if BN was folded into the "
                "convolutions, check the folding against the checkpoint with bnaudit compare",
            )
        )
    return findings
