"""The `meta` reference: the training graph a TF1 `Saver` wrote beside the checkpoint.

`saver.save(sess, "dir/model.ckpt", global_step=20)` writes `model.ckpt-20.meta`, a
MetaGraphDef of the training graph. Imported, restored from the checkpoint and run with its
training flags fed False, it computes what this checkpoint gives in inference, with no
freezing involved. This module reads and vets the file without TensorFlow; `bnaudit.run`
imports and runs it.

Safety. A training graph always holds its Saver's own ops, which `check_safe` refuses in a
frozen graph. In a `.meta` exactly these are exempt, and nothing else:
- restore ops (`Restore`, `RestoreV2`, `RestoreSlice`) in the Saver's name scope (the scope
  of `saver_def.restore_op_name`, e.g. `save/`) whose filename input is the Saver's filename
  tensor (`saver_def.filename_tensor_name`): bnaudit runs the restore op feeding that tensor
  the checkpoint prefix the user passed, so they read that checkpoint and no other file;
- save ops (`Save`, `SaveV2`, `SaveSlices`, `MergeV2Checkpoints`) in the Saver's scope, which
  bnaudit never runs: it refuses the graph when the restore op or a fetched tensor depends on
  one (`check_meta_safe`).
Every other unsafe op, including one in the Saver's scope or wired to another filename, is
refused as in a frozen graph unless `--allow-unsafe-ops`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnaudit.audit.detect import BnLayer, find_layers
from bnaudit.errors import BnauditError
from bnaudit.formats.metagraph import metas_beside, read_meta_graph_def
from bnaudit.formats.tensors import shape_of
from bnaudit.model.graph import Body, Graph, TensorRef, index_graph
from bnaudit.model.validate import check_graph, check_graph_def
from bnaudit.names import normalize, tensor_name
from bnaudit.report.results import LayerComparison
from bnaudit.run.bounds import check_runnable
from bnaudit.run.safety import UnsafeOp, check_safe, scan

RESTORE_OPS = frozenset({"Restore", "RestoreV2", "RestoreSlice"})
SAVE_OPS = frozenset({"Save", "SaveV2", "SaveSlices", "MergeV2Checkpoints"})


@dataclass(frozen=True)
class MetaGraph:
    """A `.meta` file, parsed and indexed, with its Saver."""

    path: Path
    data: bytes
    """The file's bytes, for TensorFlow to parse."""
    graph: Graph
    """Its GraphDef, indexed like a frozen graph."""
    layers: tuple[BnLayer, ...]
    """BN layers detection finds in the training graph, in graph order."""
    restore_op: str
    """`saver_def.restore_op_name`: running it restores every variable the Saver holds."""
    filename_tensor: str
    """`saver_def.filename_tensor_name`: fed the checkpoint prefix."""
    saver_keys: frozenset[str]
    """The checkpoint keys the Saver's restore ops read."""
    saver_nodes: frozenset[str]
    """The Saver's own restore and save ops, vetted as described in the module docstring."""
    save_nodes: frozenset[str]
    """The vetted save ops: never run."""

    @property
    def flags(self) -> list[str]:
        """The training flags of its BN layers (placeholders bnaudit feeds False)."""
        names = [layer.flag.name for layer in self.layers if layer.flag is not None]
        return list(dict.fromkeys(n for n in names if n in self.graph.top.nodes))


def read_meta(path: Path) -> MetaGraph:
    """Parse and index a `.meta`; a BnauditError says why it cannot serve as a reference."""
    data, message = read_meta_graph_def(path)
    graph_def = message.graph_def
    if not graph_def.node:
        raise BnauditError(f"{path.name} holds no graph")
    saver = message.saver_def
    if not saver.restore_op_name or not saver.filename_tensor_name:
        raise BnauditError(f"{path.name} has no Saver to restore the checkpoint with")
    check_graph_def(path, graph_def)
    graph = index_graph(path, graph_def)
    check_graph(graph)
    restore = saver.restore_op_name.split(":")[0]
    filename = saver.filename_tensor_name.split(":")[0]
    if restore not in graph.top.nodes or filename not in graph.top.nodes:
        raise BnauditError(f"{path.name}: its Saver names ops the graph lacks")
    scope = restore.rpartition("/")[0] + "/"
    keys: set[str] = set()
    vetted: set[str] = set()
    saves: set[str] = set()
    for name, node in graph.top.nodes.items():
        if not name.startswith(scope):
            continue
        # Output 0 of the filename tensor, the one bnaudit feeds: no other file is read.
        if node.op in RESTORE_OPS and graph.top.inputs(node)[0] == TensorRef(filename, 0):
            vetted.add(name)
            keys |= _restored_keys(graph.top, node)
        elif node.op in SAVE_OPS:
            vetted.add(name)
            saves.add(name)
    return MetaGraph(
        path=path,
        data=data,
        graph=graph,
        layers=tuple(find_layers(graph).layers),
        restore_op=restore,
        filename_tensor=f"{filename}:0",
        saver_keys=frozenset(keys),
        saver_nodes=frozenset(vetted),
        save_nodes=frozenset(saves),
    )


def find_meta(
    prefix: Path,
    keys: frozenset[str],
    inputs: dict[str, tuple[int, ...] | None],
    allow_unsafe: bool = False,
    rows: Sequence[LayerComparison] = (),
) -> tuple[MetaGraph | None, str]:
    """The usable `.meta` beside a Saver prefix, and why it is (or why none is) usable.

    `PREFIX.meta` first; else any other `.meta` of the directory (latest name first) whose
    Saver the checkpoint satisfies: `model.ckpt-10` saved with `write_meta_graph=False` runs
    in the graph of `model.ckpt-20.meta`. `inputs` are the frozen graph's data placeholders and
    their shapes.
    """
    own = prefix.with_name(prefix.name + ".meta")
    candidates = metas_beside(prefix)
    if not candidates:
        return None, f"no .meta beside {prefix.name}"
    why_not = []
    for path in candidates:
        try:
            meta = read_meta(path)
        except BnauditError as error:
            why_not.append(str(error))
            continue
        problem = unusable(meta, keys, inputs, allow_unsafe, rows)
        if problem is None:
            if path == own:
                return meta, f"{path.name} is beside the checkpoint"
            return meta, (
                f"{path.name} is in the checkpoint's directory and the checkpoint holds every "
                "variable its Saver restores"
            )
        why_not.append(f"{path.name}: {problem}")
    return None, "; ".join(why_not)


def unusable(
    meta: MetaGraph,
    keys: frozenset[str],
    inputs: dict[str, tuple[int, ...] | None],
    allow_unsafe: bool = False,
    rows: Sequence[LayerComparison] = (),
) -> str | None:
    """Why the `.meta` cannot reproduce this checkpoint in inference, or None.

    `rows` are the frozen graph's layers: a `.meta` lacking one of them is the training
    graph of another model, however well its Saver fits the checkpoint.
    """
    unsafe = [] if allow_unsafe else unsafe_ops(meta)
    saving = (
        []
        if allow_unsafe
        else sorted(_ancestors(meta.graph.top, [meta.restore_op]) & meta.save_nodes)
    )
    if saving:
        return f"its restore depends on the save op {saving[0]}, which bnaudit never runs"
    if unsafe:
        more = f" and {len(unsafe) - 1} more" if len(unsafe) > 1 else ""
        return (
            f"it holds {unsafe[0].op} ({unsafe[0].reason}; node {unsafe[0].node!r}){more}, "
            "which bnaudit does not run without --allow-unsafe-ops"
        )
    fetched = fetch_map(meta, rows, ())
    lacking = [row.scope for row in rows if tensor_name(row.name) not in fetched]
    if lacking:
        more = f" and {len(lacking) - 1} more" if len(lacking) > 1 else ""
        return f"its graph has no {lacking[0]}{more} (the training graph of another model)"
    missing = sorted(meta.saver_keys - keys)
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        return f"its Saver restores {missing[0]}{more}, which the checkpoint lacks"
    nodes = meta.graph.top.nodes
    for layer in meta.layers:
        for role, param in layer.params.items():
            if param.kind == "variable" and param.source not in meta.saver_keys:
                return (
                    f"its Saver does not restore {param.source} ({layer.scope}'s {role}), "
                    "so it would keep its initial value"
                )
        if layer.mode == "training":
            return (
                f"{layer.scope} normalizes with batch statistics in the training graph and no "
                "flag switches it to inference"
            )
    for name, shape in inputs.items():
        node = nodes.get(name)
        if node is None:
            return f"it has no input named {name} (an input of the frozen graph)"
        theirs = shape_of(node.attr["shape"].shape) if "shape" in node.attr else None
        if not _compatible(shape, theirs):
            return (
                f"its input {name} has shape {_show(theirs)}, the frozen graph's "
                f"{_show(shape)} (built for another layout or size)"
            )
    return None


def _compatible(ours: tuple[int, ...] | None, theirs: tuple[int, ...] | None) -> bool:
    if ours is None or theirs is None or not theirs:
        return True  # unknown rank, or a placeholder declared without a shape
    return len(ours) == len(theirs) and all(
        a < 0 or b < 0 or a == b for a, b in zip(ours, theirs, strict=True)
    )


def _show(shape: tuple[int, ...] | None) -> str:
    if shape is None:
        return "unknown"
    return "[" + ", ".join("?" if d < 0 else str(d) for d in shape) + "]"


def fetch_map(
    meta: MetaGraph, rows: Sequence[LayerComparison], outputs: Sequence[str]
) -> dict[str, str]:
    """Frozen tensor -> the meta graph's tensor, for each layer and output it has.

    A layer pairs with the meta graph's layer of the same scope (or of its checkpoint
    scope), else with a node of the same name; an output with a node of the same name.
    """
    by_scope: dict[str, BnLayer] = {}
    for layer in meta.layers:
        by_scope.setdefault(normalize(layer.scope), layer)
    nodes = meta.graph.top.nodes
    fetches: dict[str, str] = {}
    for row in rows:
        scopes = [row.scope] + ([row.checkpoint_scope] if row.checkpoint_scope else [])
        found = next((by_scope[normalize(s)] for s in scopes if normalize(s) in by_scope), None)
        if found is not None:
            fetches[tensor_name(row.name)] = tensor_name(found.name)
        elif row.name in nodes:
            fetches[tensor_name(row.name)] = tensor_name(row.name)
    for name in outputs:
        if name in nodes:
            fetches[f"{name}:0"] = f"{name}:0"
    return fetches


def unsafe_ops(meta: MetaGraph) -> list[UnsafeOp]:
    """The ops of the `.meta` that may not run, apart from its Saver's own vetted ones."""
    return [u for u in scan(meta.graph.graph_def) if u.function or u.node not in meta.saver_nodes]


def check_meta_safe(meta: MetaGraph, fetches: Iterable[str], allow: bool) -> None:
    """Refuse unsafe ops beyond the Saver's own, and any run that would reach a save op."""
    check_safe(meta.graph.graph_def, str(meta.path), allow, meta.saver_nodes)
    if not allow:
        check_runnable(meta.graph, str(meta.path))
    if allow or not meta.save_nodes:
        return
    reached = _ancestors(meta.graph.top, [meta.restore_op, *(t.split(":")[0] for t in fetches)])
    used = sorted(reached & meta.save_nodes)
    if used:
        raise BnauditError(
            f"{meta.path} makes the restore or a BN output depend on the save op {used[0]}; "
            "running it would write files: inspect the graph, use --reference patched, or pass "
            "--allow-unsafe-ops"
        )


def _ancestors(body: Body, names: list[str]) -> set[str]:
    seen = set(names)
    frontier = list(names)
    while frontier:
        node = body.nodes.get(frontier.pop())
        if node is None:
            continue
        for text in node.input:
            name = text.lstrip("^").split(":")[0]
            if name not in seen:
                seen.add(name)
                frontier.append(name)
    return seen


def _restored_keys(body: Body, node: Any) -> set[str]:
    """The checkpoint keys a restore op reads (its `tensor_names` Const)."""
    refs = body.inputs(node)
    if len(refs) < 2:
        return set()
    names = body.nodes.get(refs[1].node)
    if names is None or names.op != "Const":
        return set()
    return {v.decode(errors="replace") for v in names.attr["value"].tensor.string_val}
