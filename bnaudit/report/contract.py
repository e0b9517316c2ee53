"""The JSON contract (schema_version 1): a report as plain data, numbers JSON can hold."""

from __future__ import annotations

import math
from typing import Any

from bnaudit.findings import Finding
from bnaudit.report.results import ActivationDiff, CompareReport, ListReport

SCHEMA_VERSION = 1


def _number(value: float | None) -> float | None:
    """JSON has no NaN or Infinity: those become null (the findings say why)."""
    return None if value is None or not math.isfinite(value) else value


def _header(report: ListReport | CompareReport) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "command": report.command, "passed": report.passed}


def finding_dict(finding: Finding) -> dict[str, Any]:
    return {"code": finding.code, "severity": finding.severity.label, "message": finding.message}


def list_report_dict(report: ListReport) -> dict[str, Any]:
    """The `list-bn` JSON contract (schema_version 1)."""
    return {
        **_header(report),
        "graph": report.graph,
        "layers": [
            {
                "name": layer.name,
                "scope": layer.scope,
                "op": layer.op,
                "mode": layer.mode,
                "flag": None
                if layer.flag is None
                else {"name": layer.flag.name, "default": layer.flag.default},
                "epsilon": _number(layer.epsilon),
                "channels": layer.channels,
                "data_format": layer.data_format,
                "params": {
                    role: {"source": p.source, "min": _number(p.min), "max": _number(p.max)}
                    for role, p in layer.params.items()
                },
                "status": layer.status,
                "findings": [finding_dict(f) for f in layer.findings],
            }
            for layer in report.layers
        ],
        "findings": [finding_dict(f) for f in report.findings],
    }


def compare_report_dict(report: CompareReport) -> dict[str, Any]:
    """The `compare` JSON contract (schema_version 1)."""
    return {
        **_header(report),
        "checkpoint": report.checkpoint,
        "graph": report.graph,
        "layers": [
            {
                "name": layer.name,
                "scope": layer.scope,
                "op": layer.op,
                "mode": layer.mode,
                "match": {
                    "method": layer.match_method,
                    "checkpoint_scope": layer.checkpoint_scope,
                },
                "stats": {
                    role: {
                        "max_abs_diff": _number(diff.max_abs_diff),
                        "max_rel_diff": _number(diff.max_rel_diff),
                    }
                    for role, diff in layer.stats.items()
                },
                "activation": activation_dict(layer.activation),
                "own_activation": activation_dict(layer.own_activation),
                "status": layer.status,
                "findings": [finding_dict(f) for f in layer.findings],
            }
            for layer in report.layers
        ],
        "findings": [finding_dict(f) for f in report.findings],
        "notes": list(report.notes),
        "first_divergent_layer": report.first_divergent_layer,
        "reference": report.reference,
        "reference_reason": report.reference_reason,
        "outputs": [
            {"name": o.name, "activation": activation_dict(o.activation)} for o in report.outputs
        ],
    }


def activation_dict(diff: ActivationDiff | None) -> dict[str, Any] | None:
    """The JSON form of an activation difference (non-finite numbers become null)."""
    if diff is None:
        return None
    return {
        "max_abs_diff": _number(diff.max_abs_diff),
        "max_rel_diff": _number(diff.max_rel_diff),
        "mean_abs_diff": _number(diff.mean_abs_diff),
        "cosine": _number(diff.cosine),
    }
