"""The finding catalog: every code bnaudit reports, its severity, what it means and its fix.

Codes are a contract (JSON, JUnit, the README's findings table, which a test checks against
this catalog). Stages describe what they saw; `finding` adds the catalog's severity and fix,
so a code always has the same severity and the same advice wherever it is raised.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

Code = Literal[
    "untrained-stats",
    "training-mode",
    "conditional-mode",
    "nonfinite-stats",
    "negative-variance",
    "nonstandard-bn",
    "not-frozen",
    "missing-function",
    "no-bn",
    "stats-mismatch",
    "missing-in-checkpoint",
    "missing-in-graph",
    "unmatched",
    "folded",
    "folded-mismatch",
    "fold-ambiguous",
    "shape-mismatch",
    "ema-raw",
    "ema-averaged",
    "wrong-checkpoint",
    "not-runnable",
    "activation-divergence",
    "inherited-divergence",
]


class Severity(enum.IntEnum):
    """How bad a finding is; `--fail-on` compares against this order."""

    INFO = 1
    WARNING = 2
    ERROR = 3

    @property
    def label(self) -> str:
        return self.name.lower()


FAIL_ON: dict[str, Severity | None] = {
    "error": Severity.ERROR,
    "warning": Severity.WARNING,
    "never": None,
}
"""`--fail-on` choices: the lowest severity that fails (None never fails)."""


@dataclass(frozen=True)
class Finding:
    """One problem (or fact worth knowing) about a layer or the whole graph."""

    code: Code
    """A stable identifier such as `untrained-stats`; codes are a contract."""
    severity: Severity
    message: str
    """The likely cause and the fix, in the user's words."""
    layer: str | None = None
    """The layer's scope; None for a graph-level finding."""


@dataclass(frozen=True)
class FindingKind:
    """What the catalog says of one code."""

    code: Code
    severity: Severity
    meaning: str
    """What the finding means, as the README's findings table says it (Markdown)."""
    fix: str
    """The usual fix, appended to every message unless the stage names a more precise one."""


INFERENCE_FIX = "freeze with training=False (Keras: call the model with training=False)"
UPDATE_OPS_FIX = (
    "build train_op under tf.control_dependencies(tf.compat.v1.get_collection("
    "tf.compat.v1.GraphKeys.UPDATE_OPS)) (Keras: train with fit or training=True), "
    "then freeze again"
)
SAVER_FIX = (
    "save with a Saver over all global variables (tf.compat.v1.train.Saver() or "
    "var_list=tf.compat.v1.global_variables()), not only the trainable ones"
)
HEALTHY_FIX = "freeze from a healthy checkpoint"
MAP_HINT = "pair names with --map OLD=NEW"

_E, _W, _I = Severity.ERROR, Severity.WARNING, Severity.INFO
CATALOG: dict[Code, FindingKind] = {
    kind.code: kind
    for kind in (
        FindingKind(
            "untrained-stats",
            _E,
            "moving mean exactly 0 and variance exactly 1 in every channel: the update ops "
            "never ran",
            UPDATE_OPS_FIX,
        ),
        FindingKind(
            "training-mode",
            _E,
            "the layer normalizes with batch statistics by default (frozen in training mode, "
            "or a flag defaulting to True)",
            INFERENCE_FIX,
        ),
        FindingKind(
            "conditional-mode",
            _W,
            "a flag with no default decides between batch and moving statistics",
            f"feed the flag False at inference, or {INFERENCE_FIX}",
        ),
        FindingKind("nonfinite-stats", _E, "NaN or Inf in a parameter", HEALTHY_FIX),
        FindingKind("negative-variance", _E, "a negative moving variance", HEALTHY_FIX),
        FindingKind(
            "nonstandard-bn",
            _W,
            "a hand-written BN computes something other than BN (epsilon added outside the "
            "square root)",
            "write (x - mean) / sqrt(var + eps), or use tf.nn.batch_normalization",
        ),
        FindingKind(
            "not-frozen",
            _W,
            "parameters are read from variables: the graph was not frozen",
            "freeze it with convert_variables_to_constants(_v2) and audit the .pb (or compare "
            "it with the checkpoint)",
        ),
        FindingKind(
            "missing-function",
            _E,
            "an `If`/call names a function the graph's library lacks (what "
            "`optimize_for_inference` can leave behind)",
            "freeze again and skip that step",
        ),
        FindingKind(
            "no-bn",
            _I,
            "(list-bn) the graph has no BN layer (BN may have been folded into convolutions)",
            "if BN was folded into the convolutions, check the folding against the checkpoint "
            "with bnaudit compare",
        ),
        FindingKind(
            "stats-mismatch",
            _E,
            "(compare) a frozen constant differs from the checkpoint beyond "
            "`--stat-atol`/`--stat-rtol`: the wrong checkpoint was frozen",
            "freeze again from this checkpoint",
        ),
        FindingKind(
            "missing-in-checkpoint",
            _E,
            "(compare) the checkpoint lacks the layer's moving statistics: a `Saver` given "
            "only the trainable variables",
            SAVER_FIX,
        ),
        FindingKind(
            "missing-in-graph",
            _E,
            "(compare) a checkpoint BN layer has no counterpart in the graph",
            f"freeze the model this checkpoint belongs to (or {MAP_HINT})",
        ),
        FindingKind(
            "unmatched",
            _E,
            "(compare) a graph BN layer has no counterpart in the checkpoint",
            f"pass the right checkpoint, or {MAP_HINT}",
        ),
        FindingKind(
            "folded",
            _I,
            "(compare) BN folded into the preceding convolution (`Conv2D`, "
            "`DepthwiseConv2dNative`, as `optimize_for_inference` does; also MatMul/Conv3D), "
            "verified: the weights equal `w * gamma / sqrt(var + eps)` and the bias "
            "`beta + (b - mean) * gamma / sqrt(var + eps)` from the checkpoint (a depthwise "
            "filter `[h, w, in, M]` scales output channel `i*M + m`)",
            "",
        ),
        FindingKind(
            "folded-mismatch",
            _E,
            "(compare) the folded weights do not match the checkpoint: folded from stale "
            "statistics",
            "freeze and fold again from this checkpoint",
        ),
        FindingKind(
            "fold-ambiguous",
            _W,
            "(compare) BN was folded, but several convolutions or checkpoint kernels fit it "
            "equally well, so the fold is not verified (never checked against a guess)",
            f"{MAP_HINT}, or compare the unfolded graph",
        ),
        FindingKind(
            "shape-mismatch",
            _E,
            "(compare) the checkpoint's layer has another channel count than the graph's: the "
            "checkpoint is from another architecture",
            "pass the checkpoint of this architecture",
        ),
        FindingKind(
            "ema-raw",
            _W,
            "(compare) the checkpoint holds `ExponentialMovingAverage` shadows of the layer's "
            "parameters, but the graph froze the raw values (evaluation is meant to use the "
            "averages)",
            "restore through ema.variables_to_restore() before freezing",
        ),
        FindingKind(
            "ema-averaged",
            _I,
            "(compare) the graph froze the `ExponentialMovingAverage` shadows of the layer's "
            "parameters; they are compared (and run) as the checkpoint's values",
            "",
        ),
        FindingKind(
            "wrong-checkpoint",
            _E,
            "(compare) the graph's constants differ from the checkpoint given but match "
            "another checkpoint beside it (or under `--search`), which the message names",
            "compare with the checkpoint named, or freeze again from the one you meant",
        ),
        FindingKind(
            "not-runnable",
            _E,
            "the graph is well formed but TensorFlow cannot run it (e.g. a function returns "
            "a tensor its body does not define)",
            "freeze again from the training code",
        ),
        FindingKind(
            "activation-divergence",
            _E,
            "(compare, run) the layer itself changes the result: applied to the reference's "
            "input, its frozen parameters and mode give an output beyond `--atol` and "
            "`--rtol` of the reference's; the message names the cause",
            "fix the first divergent layer first: later layers inherit its difference",
        ),
        FindingKind(
            "inherited-divergence",
            _I,
            "(compare, run) the layer's output differs only because its input already does: "
            "applied to the reference's input, it gives the reference's output",
            "",
        ),
    )
}


def finding(code: Code, what: str, layer: str | None = None, fix: str | None = None) -> Finding:
    """A finding of `code`: what was seen, then the fix (the catalog's unless given)."""
    kind = CATALOG[code]
    advice = kind.fix if fix is None else fix
    return Finding(code, kind.severity, f"{what}; {advice}" if advice else what, layer)


def at_layer(findings: list[Finding], layer: str) -> list[Finding]:
    """The same findings, attributed to `layer`."""
    return [Finding(f.code, f.severity, f.message, layer) for f in findings]


def passes(findings: list[Finding], fail_on: Severity | None) -> bool:
    """True when no finding reaches the threshold."""
    return fail_on is None or all(f.severity < fail_on for f in findings)
