"""`compare` with a run: plan (no TensorFlow) -> execute (TensorFlow) -> interpret.

The same inputs go through the frozen graph and the checkpoint's reference; each BN layer's
output and each final output is compared, and the first divergent layer is named.
"""

from __future__ import annotations

from collections.abc import Callable

from bnaudit.audit.compare import StaticAudit
from bnaudit.names import row_name
from bnaudit.report.results import CompareReport
from bnaudit.run.contribution import Contributions, Measured
from bnaudit.run.execute import Reduced, import_tensorflow, run_pair
from bnaudit.run.inputs import save_arrays
from bnaudit.run.interpret import interpret
from bnaudit.run.isolate import run_isolated
from bnaudit.run.options import Progress, RunOptions, Silent
from bnaudit.run.plan import RunPlan, plan_run


def run_compare(
    static: StaticAudit, options: RunOptions, progress: Progress | None = None
) -> CompareReport:
    """The static report with each layer's activation difference and its findings."""
    progress = progress or Silent()
    plan = plan_run(static, options)
    for warning in plan.inputs.warnings:
        progress.warn(warning)
    if options.save_inputs is not None:
        save_arrays(options.save_inputs, plan.inputs.arrays)
    return interpret_run(static, plan, execute(plan, options, progress))


def interpret_run(static: StaticAudit, plan: RunPlan, reduced: Reduced[Measured]) -> CompareReport:
    """The static report with what the run measured, by node name."""
    values = reduced.values
    diffs = {row_name(name): measured.activation for name, measured in values.items()}
    own = {row_name(name): m.own for name, m in values.items() if m.own is not None}
    return interpret(static.report, plan, diffs, own)


def execute(plan: RunPlan, options: RunOptions, progress: Progress) -> Reduced[Measured]:
    """Run the plan's two sides chunk by chunk, each fetched pair reduced to its difference
    (and a layer's own), in a child process stopped after `options.timeout` seconds."""

    def work(step: Callable[[str], None]) -> Reduced[Measured]:
        reduce = Contributions(
            plan.layer_inputs, plan.maths, options.atol, options.rtol, plan.precision
        )
        return run_pair(
            plan.frozen, plan.reference, list(plan.tensors), reduce, step, options.budget
        )

    return run_isolated(
        work,
        progress.step,
        options.timeout,
        "the frozen graph and its reference",
        prepare=import_tensorflow,
    )
