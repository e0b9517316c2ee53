"""`list-bn`: every BN layer of a frozen graph, its mode, its parameters and their health."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bnaudit.audit.detect import BnLayer, Param, find_layers
from bnaudit.audit.health import graph_findings, layer_findings
from bnaudit.audit.options import ListOptions
from bnaudit.model import load_model
from bnaudit.model.runnable import unrunnable
from bnaudit.report.results import FlagInfo, LayerReport, ListReport, ParamSummary


def list_layers(path: Path, options: ListOptions | None = None) -> ListReport:
    """Read the model at `path` and report its BN layers; raises BnauditError on bad input."""
    options = options or ListOptions()
    graph = load_model(path)
    scan = find_layers(graph)
    return ListReport(
        graph=str(path),
        layers=tuple(layer_report(layer) for layer in scan.layers),
        findings=tuple(graph_findings(scan, unrunnable(graph))),
        fail_on=options.fail_on,
    )


def layer_report(layer: BnLayer) -> LayerReport:
    flag = None if layer.flag is None else FlagInfo(layer.flag.name, layer.flag.default)
    return LayerReport(
        name=layer.name,
        scope=layer.scope,
        op=layer.op,
        mode=layer.mode,
        flag=flag,
        epsilon=layer.epsilon,
        channels=layer.channels,
        data_format=layer.data_format,
        params={role: param_summary(p) for role, p in layer.params.items()},
        findings=tuple(layer_findings(layer)),
    )


def param_summary(param: Param) -> ParamSummary:
    value = param.value
    if value is None or value.size == 0 or not np.issubdtype(value.dtype, np.number):
        return ParamSummary(param.source, param.kind, None, None)
    finite = value[np.isfinite(value)]
    if finite.size == 0:
        return ParamSummary(param.source, param.kind, None, None)
    return ParamSummary(param.source, param.kind, float(finite.min()), float(finite.max()))
