"""bnaudit's public API: what the command line calls, and what a script can call without it.

    from bnaudit.api import compare, list_bn, CompareOptions, RunOptions

    report = list_bn(Path("model.pb"))
    report = compare(Path("ckpt"), Path("model.pb"), run=RunOptions(batch=...))

Both return a frozen report (`bnaudit.report.results`) that any renderer of
`bnaudit.report.REPORTERS` turns into text; `report.passed` is the verdict. Failures the user
can fix raise `BnauditError` with a one-line message. TensorFlow is imported only when `run`
asks for the graphs to be executed.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bnaudit.audit.options import CompareOptions, ListOptions, Tolerances
from bnaudit.errors import BnauditError

if TYPE_CHECKING:
    from bnaudit.report.results import CompareReport, ListReport
    from bnaudit.run.chunks import ChunkBudget
    from bnaudit.run.inputs import InputOptions
    from bnaudit.run.options import Progress, RunOptions, Silent

__all__ = [
    "BnauditError",
    "ChunkBudget",
    "CompareOptions",
    "CompareReport",
    "InputOptions",
    "ListOptions",
    "ListReport",
    "Progress",
    "RunOptions",
    "Silent",
    "Tolerances",
    "compare",
    "list_bn",
]
# Exported, but imported only when first used: `list-bn` should not pay for the run's modules.
_LAZY = {
    "ChunkBudget": "bnaudit.run.chunks",
    "CompareReport": "bnaudit.report.results",
    "InputOptions": "bnaudit.run.inputs",
    "ListReport": "bnaudit.report.results",
    "Progress": "bnaudit.run.options",
    "RunOptions": "bnaudit.run.options",
    "Silent": "bnaudit.run.options",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def list_bn(model: Path, options: ListOptions | None = None) -> ListReport:
    """Every BN layer of the model, its mode, parameters and their health."""
    from bnaudit.audit.listing import list_layers

    return list_layers(model, options)


def compare(
    checkpoint: Path,
    model: Path,
    options: CompareOptions | None = None,
    run: RunOptions | None = None,
    progress: Progress | None = None,
    writes: Sequence[tuple[str, Path | None]] = (),
) -> CompareReport:
    """The checkpoint's BN values against the model's; with `run`, both executed as well.

    Without `run` nothing is executed and TensorFlow is never imported (`--no-run`).
    `writes` names the files the caller will write (an option name and a path, such as
    `("--output", report_path)`); each, like `run.save_inputs`, is refused with a UsageError
    when it is one of the inputs, checked again once the checkpoint's files are known and
    before anything runs or is written.
    """
    from bnaudit.audit.compare import audit
    from bnaudit.outputs import refuse_overwrite

    planned = [*writes, *([("--save-inputs", run.save_inputs)] if run is not None else [])]
    for option, path in planned:
        refuse_overwrite(option, path, [checkpoint, model])
    static = audit(checkpoint, model, options)
    for option, path in planned:
        refuse_overwrite(option, path, static.read_files)
    if run is None:
        return static.report
    from bnaudit.run.options import Silent
    from bnaudit.run.pipeline import run_compare  # TensorFlow's side of bnaudit

    return run_compare(static, run, progress or Silent())
