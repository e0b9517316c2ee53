"""Build the benchmark inputs: a frozen Keras 3 ResNet-50 graph and its object checkpoint.

    python benchmarks/make_resnet50.py OUTDIR

writes `OUTDIR/resnet50_frozen_anybatch.pb` (about 100 MB, 53 decomposed BN layers, input
`x` of shape [?, 224, 224, 3] so `compare --batch` picks the batch) and the checkpoint prefix
`OUTDIR/resnet50_ckpt/ckpt`. Weights are random (`weights=None`: nothing
is downloaded); every BN parameter is then set to random, plausible values so the graph looks
trained (no `untrained-stats`, no gamma of ones). Imports TensorFlow, so `bench.py` runs it
in its own process.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

GRAPH_NAME = "resnet50_frozen_anybatch.pb"
"""Named for its unknown batch: a workdir holding an older batch-1 graph regenerates."""
CHECKPOINT_PREFIX = "resnet50_ckpt/ckpt"
BN_LAYERS = 53


def build(outdir: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write the frozen graph and the checkpoint into `outdir`; return (graph, prefix)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    model = keras.applications.ResNet50(weights=None)
    bn_layers = [
        layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert len(bn_layers) == BN_LAYERS, len(bn_layers)
    for layer in bn_layers:
        channels = layer.moving_mean.shape[0]
        layer.moving_mean.assign(rng.normal(0.0, 0.1, channels).astype("float32"))
        layer.moving_variance.assign(rng.uniform(0.5, 1.5, channels).astype("float32"))
        layer.gamma.assign(rng.uniform(0.5, 1.5, channels).astype("float32"))
        layer.beta.assign(rng.normal(0.0, 0.1, channels).astype("float32"))

    outdir.mkdir(parents=True, exist_ok=True)
    prefix = outdir / CHECKPOINT_PREFIX
    tf.train.Checkpoint(model=model).write(str(prefix))

    function = tf.function(lambda x: model(x, training=False))
    concrete = function.get_concrete_function(tf.TensorSpec([None, 224, 224, 3], tf.float32))
    frozen = convert_variables_to_constants_v2(concrete)
    graph = outdir / GRAPH_NAME
    graph.write_bytes(frozen.graph.as_graph_def().SerializeToString())
    return graph, prefix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    args = parser.parse_args()
    graph, prefix = build(args.outdir)
    print(f"wrote {graph} ({graph.stat().st_size / 1e6:.1f} MB) and checkpoint {prefix}")


if __name__ == "__main__":
    main()
