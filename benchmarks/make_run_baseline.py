"""Prepare the bare TensorFlow baseline of `compare`'s run: the same graphs, inputs and fetches.

    python benchmarks/make_run_baseline.py CKPT GRAPH OUTDIR --batch 32

writes, with bnaudit's own code (run once, outside any timing):
- `OUTDIR/reference_patched.pb`: the patched reference `compare` builds for CKPT and GRAPH;
- `OUTDIR/inputs_b{batch}.npz`: the random inputs `compare --batch` feeds both graphs;
- `OUTDIR/fetches.json`: the tensors `compare` fetches from both (every compared BN layer's
  output, then the final outputs).
The timed baseline (`TF_RUN` in bench.py) then only imports TensorFlow, imports both graphs
and runs each once on those inputs, fetching those tensors.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REFERENCE_NAME = "reference_patched.pb"
FETCHES_NAME = "fetches.json"


def inputs_name(batch: int) -> str:
    return f"inputs_b{batch}.npz"


def prepare(checkpoint: Path, graph: Path, outdir: Path, batch: int) -> None:
    """Write the reference graph, the inputs and the fetch list as `compare` would use them."""
    from bnaudit.audit.compare import audit
    from bnaudit.findings import FAIL_ON
    from bnaudit.report.results import Tolerances
    from bnaudit.run.inputs import InputOptions, make_inputs, placeholders, save_arrays
    from bnaudit.run.patch import patched_reference
    from bnaudit.run.pipeline import final_outputs

    static = audit(checkpoint, graph, Tolerances(), [], FAIL_ON["error"])
    reference = patched_reference(static.graph, static.layers, static.paired, static.folded)
    (outdir / REFERENCE_NAME).write_bytes(reference.graph_def.SerializeToString())
    flags = {layer.flag.name for layer in static.layers if layer.flag is not None}
    inputs = make_inputs(placeholders(static.graph.graph_def), flags, InputOptions(batch=batch))
    if inputs.switches:
        raise SystemExit("the baseline feeds data only; this graph has training switches")
    save_arrays(outdir / inputs_name(batch), inputs.arrays)
    # As `compare` does: a folded BN only when the checkpoint can fold it again.
    refoldable = {fold.scope for fold in static.folded}
    rows = [r for r in static.report.layers if r.op != "folded" or r.scope in refoldable]
    layers = list(dict.fromkeys(row.name for row in rows))
    outputs = [n for n in final_outputs(static.graph) if n not in layers]
    fetches = [f"{name}:0" for name in [*layers, *outputs]]
    (outdir / FETCHES_NAME).write_text(json.dumps(fetches) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("graph", type=Path)
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    prepare(args.checkpoint, args.graph, args.outdir, args.batch)


if __name__ == "__main__":
    main()
