"""Run only graphs whose ops compute: an allow-list, checked before anything runs.

Running a GraphDef runs its ops, and a frozen graph from elsewhere can hold ops that read or
write files, start datasets, memory-map a file (`ImmutableConst`), run Python (`PyFunc`),
talk to other machines, or end the process. bnaudit allows only the ops of TensorFlow's
families that compute in memory (math, nn, array, control flow, functions, variables, random
numbers, strings, ...), listed in `allowed_ops.txt` (written by `tools/make_allowed_ops.py`
from TensorFlow's own op modules). Every other op, in the top-level graph or in any function
of the library, reachable or not, is refused unless the user says `--allow-unsafe-ops`; so is
a `PrintV2` that prints to a file. The scan reads the GraphDef without TensorFlow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from bnaudit.errors import BnauditError

ALLOWED_OPS: frozenset[str] = frozenset(
    line
    for line in resources.files("bnaudit.run").joinpath("allowed_ops.txt").read_text().splitlines()
    if line and not line.startswith("#")
)
"""Every op a graph may hold for bnaudit to run it (see the module docstring)."""

# What some refused ops do, to say so in the message; any op off the allow-list is refused,
# described or not.
KNOWN_UNSAFE: dict[str, str] = {
    # Files.
    "ReadFile": "reads a file",
    "WriteFile": "writes a file",
    "MatchingFiles": "lists files",
    "ImmutableConst": "memory-maps a file",
    "Save": "writes a checkpoint",
    "SaveV2": "writes a checkpoint",
    "SaveSlices": "writes a checkpoint",
    "MergeV2Checkpoints": "writes and deletes checkpoint files",
    "Restore": "reads a checkpoint",
    "RestoreV2": "reads a checkpoint",
    "RestoreSlice": "reads a checkpoint",
    "LoadAndRemapMatrix": "reads a checkpoint",
    "GenerateVocabRemapping": "reads a vocabulary file",
    "InitializeTableFromTextFile": "reads a text file",
    "InitializeTableFromTextFileV2": "reads a text file",
    "TFRecordDataset": "reads files",
    "TFRecordDatasetV2": "reads files",
    "TextLineDataset": "reads files",
    "FixedLengthRecordDataset": "reads files",
    "FixedLengthRecordDatasetV2": "reads files",
    "CSVDataset": "reads files",
    "CSVDatasetV2": "reads files",
    "ExperimentalCSVDataset": "reads files",
    "LMDBDataset": "reads a database file",
    "ExperimentalLMDBDataset": "reads a database file",
    "SqlDataset": "queries a database",
    "ExperimentalSqlDataset": "queries a database",
    "SnapshotDataset": "writes and reads files",
    "SnapshotDatasetV2": "writes and reads files",
    "SaveDataset": "writes files",
    "SaveDatasetV2": "writes files",
    "LoadDataset": "reads files",
    "DatasetToTFRecord": "writes a file",
    "ExperimentalDatasetToTFRecord": "writes a file",
    "CreateSummaryFileWriter": "writes summary files",
    "CreateSummaryDbWriter": "writes a database file",
    # Python and other processes.
    "PyFunc": "runs Python code",
    "PyFuncStateless": "runs Python code",
    "EagerPyFunc": "runs Python code",
    # The network.
    "Rpc": "calls a remote server",
    "TryRpc": "calls a remote server",
    "RpcClient": "connects to a remote server",
    "RpcCall": "calls a remote server",
    "RpcServer": "starts a server",
    "RpcServerStart": "starts a server",
    "Abort": "ends the process",
    "RemoteCall": "runs a function on another device or machine",
    "DatasetFromGraph": "runs a serialized dataset graph",
    "CacheDataset": "writes cache files",
    "CacheDatasetV2": "writes cache files",
    "MatchingFilesDataset": "lists files",
    "RecordInput": "reads files",
    "DebugIdentity": "dumps tensors to files or a debug server",
    "DebugIdentityV2": "dumps tensors to files or a debug server",
    "DebugIdentityV3": "dumps tensors to files or a debug server",
    "DebugNanCount": "dumps tensors to files or a debug server",
    "DebugNumericSummary": "dumps tensors to files or a debug server",
    "DebugNumericSummaryV2": "dumps tensors to files or a debug server",
    "DecodeProtoV2": "may load a descriptor file",
    "EncodeProto": "may load a descriptor file",
}
# Whole op families: TF1 readers (`TFRecordReaderV2`, `WholeFileReader`) and summary writes.
_UNSAFE_PATTERNS = (
    (re.compile(r"^\w*Reader(V2)?$"), "reads files"),
    (re.compile(r"^Write\w*Summary$"), "writes summary files"),
    (re.compile(r"^\w*Dataset(V\d)?$"), "runs a dataset (files, caches, other graphs)"),
    (re.compile(r"^\w*(Queue|Barrier)\w*$"), "uses a queue that can wait forever"),
    (re.compile(r"^Collective\w*$"), "talks to other workers"),
)
_SAFE_PRINT_STREAMS = {"stderr", "stdout", "log(info)", "log(warning)", "log(error)"}


@dataclass(frozen=True)
class UnsafeOp:
    """One node whose op acts outside the process."""

    op: str
    node: str
    """The node's name."""
    function: str | None
    """The library function holding it; None for the top-level graph."""
    reason: str
    """What it does, in a few words ("writes a file")."""


def _reason(node: Any) -> str | None:
    """Why the node may not run, or None when its op only computes."""
    op = str(node.op)
    if op not in ALLOWED_OPS:
        if op in KNOWN_UNSAFE:
            return KNOWN_UNSAFE[op]
        for pattern, reason in _UNSAFE_PATTERNS:
            if pattern.match(op):
                return reason
        return "is not an op that only computes"
    if op == "PrintV2" and "output_stream" in node.attr:
        stream = node.attr["output_stream"].s.decode(errors="replace")
        if stream not in _SAFE_PRINT_STREAMS:
            return f"prints to {stream}"
    return None


def scan(graph_def: Any) -> list[UnsafeOp]:
    """Every node of the graph and of its function library that acts outside the process."""
    found = [
        UnsafeOp(node.op, node.name, None, reason)
        for node in graph_def.node
        if (reason := _reason(node)) is not None
    ]
    for function in graph_def.library.function:
        found += [
            UnsafeOp(node.op, node.name, function.signature.name, reason)
            for node in function.node_def
            if (reason := _reason(node)) is not None
        ]
    return found


def check_safe(
    graph_def: Any, label: str, allow: bool, exempt: frozenset[str] = frozenset()
) -> list[UnsafeOp]:
    """The unsafe ops of `graph_def`; raises a BnauditError naming them unless `allow`.

    `exempt` names top-level nodes the caller has vetted (the Saver's own ops of a `.meta`,
    see `bnaudit.meta`): they are neither refused nor returned.
    """
    found = [u for u in scan(graph_def) if u.function is not None or u.node not in exempt]
    if found and not allow:
        by_op: dict[str, list[UnsafeOp]] = {}
        for item in found:
            by_op.setdefault(item.op, []).append(item)
        parts = [
            f"{op} ({items[0].reason}; node {_where(items[0])}"
            + (f" and {len(items) - 1} more" if len(items) > 1 else "")
            + ")"
            for op, items in by_op.items()
        ]
        raise BnauditError(
            f"{label} holds ops that act outside the process or are not known to only "
            f"compute: {'; '.join(parts)}. Running it would run them: inspect the graph, use "
            "--no-run for the static audit, or pass --allow-unsafe-ops to run it anyway"
        )
    return found


def _where(item: UnsafeOp) -> str:
    return repr(item.node) if item.function is None else f"{item.node!r} in {item.function}"
