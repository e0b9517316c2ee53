"""Prepare the bare TensorFlow baseline of `compare`'s run: the same graphs, inputs and fetches.

    python benchmarks/make_run_baseline.py CKPT GRAPH OUTDIR --batch 32

writes, from the plan `compare --reference patched` makes (`bnaudit.run.plan.plan_run`, run once,
outside any timing):
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
    """Write the reference graph, the inputs and the fetch list of `compare`'s own run plan."""
    from bnaudit.audit.compare import audit
    from bnaudit.run.inputs import InputOptions, save_arrays
    from bnaudit.run.options import RunOptions
    from bnaudit.run.plan import plan_run
    from bnaudit.run.sides import Side

    static = audit(checkpoint, graph)
    plan = plan_run(static, RunOptions(reference="patched", inputs=InputOptions(batch=batch)))
    if not isinstance(plan.reference, Side):
        raise SystemExit("the baseline needs a patched reference graph")
    (outdir / REFERENCE_NAME).write_bytes(plan.reference.graph_def.SerializeToString())
    if plan.inputs.switches:
        raise SystemExit("the baseline feeds data only; this graph has training switches")
    save_arrays(outdir / inputs_name(batch), plan.inputs.arrays)
    (outdir / FETCHES_NAME).write_text(json.dumps(list(plan.tensors)) + "\n", encoding="utf-8")


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
