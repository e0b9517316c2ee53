"""Findings a frozen graph shows on its own: mode, statistics health, broken references."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bnaudit.audit.detect import BnLayer, GraphScan
from bnaudit.findings import INFERENCE_FIX, Finding, at_layer, finding


def layer_findings(layer: BnLayer) -> list[Finding]:
    """Mode and statistics problems of one layer."""
    findings = [*_frozen_findings(layer), *_mode_findings(layer), *_stat_findings(layer)]
    if layer.deviation is not None:
        findings.append(finding("nonstandard-bn", layer.deviation))
    return at_layer(findings, layer.scope)


def _frozen_findings(layer: BnLayer) -> list[Finding]:
    variables = [role for role, param in layer.params.items() if param.kind == "variable"]
    if not variables:
        return []
    return [
        finding(
            "not-frozen",
            f"{', '.join(variables)} are read from variables: the graph is not frozen, so "
            "its values are whatever checkpoint gets restored at run time",
        )
    ]


def _mode_findings(layer: BnLayer) -> list[Finding]:
    flag = layer.flag
    if layer.mode == "training":
        return [
            finding(
                "training-mode",
                "normalizes every batch with its own statistics: the graph was frozen in "
                "training mode, so a batch of one gives garbage",
            )
        ]
    if layer.mode != "conditional" or flag is None:
        return []
    if flag.default is True:
        return [
            finding(
                "training-mode",
                f"flag {flag.name} defaults to True, so the deployed graph normalizes with "
                "batch statistics",
                fix=f"give it a False default or {INFERENCE_FIX}",
            )
        ]
    if flag.default is None:
        return [
            finding(
                "conditional-mode",
                f"flag {flag.name} has no default: whoever runs the graph chooses batch or "
                "moving statistics",
                fix=f"feed {flag.name}=False at inference or {INFERENCE_FIX}",
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
                finding(
                    "nonfinite-stats",
                    f"{role} holds NaN/Inf in {bad} of {value.size} values: training "
                    "diverged or the checkpoint is corrupt",
                )
            )
    if variance is not None and np.any(variance < 0):
        count = int(np.count_nonzero(variance < 0))
        findings.append(
            finding(
                "negative-variance",
                f"moving variance is negative in {count} of {variance.size} channels "
                f"(min {float(np.nanmin(variance)):.4g}): the statistics are corrupt",
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
            finding(
                "untrained-stats",
                "moving mean is exactly 0 and moving variance exactly 1 in every channel: "
                "the moving statistics never updated",
            )
        )
    return findings


def graph_findings(scan: GraphScan, unrunnable: Sequence[str] = ()) -> list[Finding]:
    """Findings about the graph as a whole: what TensorFlow cannot run (`unrunnable`, see
    `model.runnable`), dangling function calls, no BN at all."""
    findings = [finding("not-runnable", reason) for reason in unrunnable]
    if scan.missing_functions:
        calls = ", ".join(f"{node} -> {function}" for node, function in scan.missing_functions)
        findings.append(
            finding(
                "missing-function",
                f"{len(scan.missing_functions)} call(s) into functions the graph's library "
                f"does not contain ({calls}); the graph cannot run, and BN inside them cannot "
                "be checked (optimize_for_inference drops the library)",
            )
        )
    if not scan.layers and not scan.missing_functions:
        findings.append(finding("no-bn", "no batch-normalization layer found"))
    return findings
