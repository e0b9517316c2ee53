"""Refuse to run a graph whose ops reach outside the process: files, processes, the network.

Running a GraphDef runs every op in it, and a frozen graph from elsewhere can hold ops that
read or write files (`ReadFile`, `WriteFile`, `SaveV2`, readers and file datasets, summary
writers, `ImmutableConst` memory-maps a file), run Python (`PyFunc`, `EagerPyFunc`) or talk
to other machines (`Rpc`, debug ops with `grpc://` URLs). None of them belong in a BN
model, so `compare` refuses them unless the user says `--allow-unsafe-ops`. The scan reads
the top-level graph and every function of its library (branches, called functions, dataset
functions) without TensorFlow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bnaudit.errors import BnauditError

# Op type -> what it does that a model should not. A reasoned list, not TensorFlow's whole
# I/O surface: the ops a GraphDef can carry that act outside the process by themselves.
UNSAFE_OPS: dict[str, str] = {
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
}
# Whole op families: TF1 readers (`TFRecordReaderV2`, `WholeFileReader`) and summary writes.
_UNSAFE_PATTERNS = (
    (re.compile(r"^\w*Reader(V2)?$"), "reads files"),
    (re.compile(r"^Write\w*Summary$"), "writes summary files"),
)
_SAFE_PRINT_STREAMS = {"stderr", "stdout", "log(info)", "log(warning)", "log(error)"}
_DEBUG_OPS = re.compile(r"^Debug(Identity|NanCount|NumericSummary)(V\d)?$")


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
    op = str(node.op)
    if op in UNSAFE_OPS:
        return UNSAFE_OPS[op]
    for pattern, reason in _UNSAFE_PATTERNS:
        if pattern.match(op):
            return reason
    attrs = node.attr
    if op == "PrintV2" and "output_stream" in attrs:
        stream = attrs["output_stream"].s.decode(errors="replace")
        if stream not in _SAFE_PRINT_STREAMS:
            return f"prints to {stream}"
    if op in ("DecodeProtoV2", "EncodeProto") and "descriptor_source" in attrs:
        source = attrs["descriptor_source"].s.decode(errors="replace")
        if source not in ("", "local://"):
            return "loads a descriptor file"
    if _DEBUG_OPS.match(op):
        urls = list(attrs["debug_urls"].list.s) if "debug_urls" in attrs else []
        dump = attrs["dump_root"].s if "dump_root" in attrs else b""
        if urls or dump:
            return "dumps tensors to files or a debug server"
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
            f"{label} holds ops that act outside the process: {'; '.join(parts)}. Running it "
            "would run them: inspect the graph, use --no-run for the static audit, or pass "
            "--allow-unsafe-ops to run it anyway"
        )
    return found


def _where(item: UnsafeOp) -> str:
    return repr(item.node) if item.function is None else f"{item.node!r} in {item.function}"
