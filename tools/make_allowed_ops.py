"""Write `bnaudit/run/allowed_ops.txt`: the ops bnaudit lets a graph run, by op family.

    python tools/make_allowed_ops.py [--check]

TensorFlow generates one Python module per op-definition file (`gen_math_ops.py` holds the
ops of `core/ops/math_ops.cc`), and each op appears there as `tf_export("raw_ops.Name")`.
This script reads those modules as text (it never imports TensorFlow) and keeps the families
whose ops only compute, in memory, in this process: math, nn, array, control flow, functions,
variables, random numbers, strings and parsing of in-memory bytes, and the like. Families that
reach outside the process (files, datasets, summaries, debug dumps, Python, RPC, collectives,
queues that can block forever) are left out whole; the few such ops inside kept families are
named in `EXCLUDED`. `--check` exits 1 when the committed list differs from what the installed
TensorFlow gives (run it after upgrading TensorFlow).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import re
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "bnaudit" / "run" / "allowed_ops.txt"

# Families (TensorFlow's gen_<family>.py) whose every op computes in memory.
FAMILIES = (
    "array_ops", "audio_ops", "bitwise_ops", "candidate_sampling_ops", "clustering_ops",
    "composite_tensor_ops", "control_flow_ops", "count_ops", "ctc_ops", "cudnn_rnn_ops",
    "functional_ops", "image_ops", "linalg_ops", "list_ops", "manip_ops", "map_ops",
    "math_ops", "nn_ops", "optional_ops", "parsing_ops", "ragged_array_ops",
    "ragged_conversion_ops", "ragged_math_ops", "random_index_shuffle_ops", "random_ops",
    "resource_variable_ops", "rnn_ops", "set_ops", "sparse_ops", "special_math_ops",
    "spectral_ops", "state_ops", "stateful_random_ops", "stateless_random_ops",
    "stateless_random_ops_v2", "string_ops", "training_ops", "uniform_quant_ops",
)  # fmt: skip
# Families kept only in part: the ops matching the pattern.
PARTIAL = {
    # TensorArray and stacks (loops), partition/stitch; not queues, barriers or accumulators,
    # whose dequeue can wait forever.
    "data_flow_ops": re.compile(
        r"^(TensorArray\w*|Stack\w*|DynamicPartition|DynamicStitch|ParallelDynamicStitch)$"
    ),
    # Assertions and printing (the stream of PrintV2 is checked per node); not summaries.
    "logging_ops": re.compile(r"^(Assert|Print|PrintV2|Timestamp)$"),
    # In-memory tables; not those initialised from a file or a dataset.
    "lookup_ops": re.compile(r"^(?!InitializeTableFrom(TextFile|Dataset)).*$"),
}
# Ops of kept families that act outside the process, or end it.
EXCLUDED = {
    "ImmutableConst": "memory-maps a file",
    "Abort": "ends the process",
    "RemoteCall": "runs a function on another device or machine",
}
# Ops graphs carry that no Python module exports: function arguments and results, and the
# fused kernels TensorFlow's optimizers write (they compute what their parts compute).
INTERNAL = (
    "_Arg", "_Retval", "_DeviceArg", "_DeviceRetval", "_FusedConv2D", "_FusedDepthwiseConv2dNative",
    "_FusedMatMul", "_FusedBatchNormEx", "_FusedConv3D",
)  # fmt: skip
_EXPORT = re.compile(r"""tf_export\(["']raw_ops\.(\w+)["']\)""")


def ops_of(family: str) -> list[str]:
    """The op names TensorFlow's gen_<family>.py exports, read from its source."""
    spec = importlib.util.find_spec("tensorflow")  # finds the package, does not import it
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("TensorFlow is not installed")
    source = Path(spec.submodule_search_locations[0]) / "python" / "ops" / f"gen_{family}.py"
    if not source.is_file():
        return []
    return sorted(set(_EXPORT.findall(source.read_text())))


def tensorflow_version() -> str:
    """The installed TensorFlow's version, read from its package metadata (no import)."""
    return importlib.metadata.version("tensorflow")


def refused() -> set[str]:
    """Ops of the installed TensorFlow's families that the list leaves out."""
    spec = importlib.util.find_spec("tensorflow")
    assert spec is not None and spec.submodule_search_locations
    folder = Path(spec.submodule_search_locations[0]) / "python" / "ops"
    every = {op for path in folder.glob("gen_*.py") for op in ops_of(path.stem[4:])}
    kept = {line for line in allowed().splitlines() if line and not line.startswith("#")}
    return every - kept


def allowed() -> str:
    """The file's text: a comment line per family, then its ops, one per line."""
    lines = [
        "# Ops bnaudit lets a graph run: written by tools/make_allowed_ops.py, do not edit.",
        f"# From TensorFlow {tensorflow_version()}.",
    ]
    for family in sorted({*FAMILIES, *PARTIAL}):
        names = [n for n in ops_of(family) if n not in EXCLUDED]
        if family in PARTIAL:
            names = [n for n in names if PARTIAL[family].match(n)]
        if names:
            lines += [f"# {family}", *names]
    lines += ["# internal", *INTERNAL]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args()
    text = allowed()
    if args.check:
        same = OUT.read_text() == text
        verdict = "is up to date" if same else "differs from the installed TensorFlow's"
        print(f"allowed_ops.txt {verdict}", file=sys.stderr)
        sys.exit(0 if same else 1)
    OUT.write_text(text)
    count = sum(1 for line in text.splitlines() if not line.startswith("#"))
    print(f"wrote {OUT} ({count} ops)")


if __name__ == "__main__":
    main()
