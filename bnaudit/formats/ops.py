"""Op families bnaudit recognises by type, named once for every stage that reads a graph."""

from __future__ import annotations

FUSED_OPS = frozenset({"FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3"})
"""Fused batch normalization: one op, its mode in the `is_training` attribute."""
VARIABLE_OPS = frozenset({"VariableV2", "Variable", "VarHandleOp", "AutoReloadVariable"})
"""Ops that hold a variable: a graph still reading them was not frozen."""
IF_OPS = frozenset({"If", "StatelessIf"})
"""TF2 control flow: a predicate, then the then/else branch functions' arguments."""
CALL_OPS = frozenset({"PartitionedCall", "StatefulPartitionedCall"})
"""A call into a library function (`f`)."""
WHILE_OPS = frozenset({"While", "StatelessWhile"})
"""TF2 loops: the `cond` and `body` functions take the loop variables, the While's inputs."""
LOOP_ENTER_OPS = frozenset({"Enter", "RefEnter"})
LOOP_EXIT_OPS = frozenset({"Exit", "RefExit"})
"""TF1 (v1) loops, also what lowering a While leaves: values enter a loop frame by `Enter`
and leave it by `Exit`; everything between runs once per iteration."""
MERGE_OPS = frozenset({"Merge", "RefMerge"})
SWITCH_OPS = frozenset({"Switch", "RefSwitch"})
"""TF1 (v1) control flow: `Switch` routes a value to one branch, `Merge` joins them."""
