"""Build small real checkpoints with TensorFlow, in a subprocess, for the checkpoint tests.

Run as `python tests/ckpt_factory.py OUTDIR`. TensorFlow runs in its own process so the
test process never imports it (other tests assert it is absent) and so TF1 graph mode and
Keras 3 do not share state. Besides the checkpoints it writes `reference.pkl`: every
tensor as `tf.train.load_checkpoint` returns it, and every Keras BN variable by role.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

SEED = 7


def build(out: Path) -> dict[str, Any]:
    """Build once into `out` (reused when already there) and return the reference values."""
    reference = out / "reference.pkl"
    if not reference.is_file():
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
        env.pop("TF_USE_LEGACY_KERAS", None)
        out.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [sys.executable, __file__, str(out)], env=env, capture_output=True, text=True
        )
        if done.returncode:
            raise RuntimeError(f"building checkpoints failed:\n{done.stderr[-3000:]}")
    with reference.open("rb") as file:
        loaded: dict[str, Any] = pickle.load(file)
    return loaded


def _tf1(tf: Any, np: Any, out: Path) -> None:
    """A TF1 `Saver` checkpoint in graph mode: standard, hand-written and look-alike names."""
    rng = np.random.default_rng(SEED)
    v1 = tf.compat.v1

    def var(name: str, value: Any, trainable: bool = True, dtype: Any = None) -> Any:
        return v1.get_variable(
            name, initializer=tf.constant(value, dtype=dtype), trainable=trainable
        )

    graph = tf.Graph()
    with graph.as_default():
        with v1.variable_scope("model"):
            var("conv1/kernel", rng.normal(size=(3, 3, 2, 4)).astype("float32"))
            for scope, names in {
                "bn1": ("gamma", "beta", "moving_mean", "moving_variance"),
                "bn2": ("beta", "moving_mean", "moving_variance"),  # contrib scale=False
                "custom": ("scale", "offset", "pop_mean", "pop_var"),
                "hand": ("gamma", "beta", "mean", "variance"),
                "torchish": ("gamma", "beta", "running_mean", "running_var"),
                "norm": ("mean", "variance"),  # keras Normalization: not BN
                "LayerNorm": ("gamma", "beta"),  # layer norm: not BN
            }.items():
                for leaf in names:
                    stat = leaf not in ("gamma", "beta", "scale", "offset")
                    value = rng.uniform(0.5, 1.5, size=4).astype("float32")
                    var(f"{scope}/{leaf}", value, trainable=not stat)
            var("bn1/gamma/Adam", np.zeros(4, "float32"), trainable=False)
            var("bn1/gamma/Adam_1", np.zeros(4, "float32"), trainable=False)
            var("half", rng.normal(size=(2, 3)).astype("float16"))
            var("brain", rng.normal(size=(5,)).astype("float32"), dtype=tf.bfloat16)
            var("f64", rng.normal(size=(2, 2)))
            var("i32", np.arange(6, dtype="int32").reshape(2, 3), trainable=False)
            var("i64", np.arange(3, dtype="int64") - 5, trainable=False)
            var("u8", np.arange(4, dtype="uint8"), trainable=False)
            var("i8", np.arange(4, dtype="int8") - 2, trainable=False)
            var("flag", np.array([True, False, True]), trainable=False)
            var("text", np.array([b"hello", b"", b"world!"]), trainable=False)
            var("empty", np.zeros((0, 3), "float32"))
        step = v1.train.get_or_create_global_step()
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            sess.run(step.assign(20))
            v1.train.Saver().save(sess, str(out / "tf1" / "model.ckpt"), global_step=20)
            trainable = v1.trainable_variables()
            v1.train.Saver(var_list=trainable).save(sess, str(out / "trainable" / "model.ckpt"))

    # Two CPU devices make a sharded Saver write two data files (it wants the directory).
    (out / "sharded").mkdir(parents=True, exist_ok=True)
    graph = tf.Graph()
    with graph.as_default():
        with tf.device("/cpu:0"):
            var("bn/gamma", np.full(3, 1.5, "float32"))
            var("bn/moving_mean", np.full(3, 0.25, "float32"), trainable=False)
        with tf.device("/cpu:1"):
            var("bn/beta", np.full(3, -0.5, "float32"))
            var("bn/moving_variance", np.full(3, 2.0, "float32"), trainable=False)
        config = v1.ConfigProto(device_count={"CPU": 2})
        with v1.Session(config=config) as sess:
            sess.run(v1.global_variables_initializer())
            v1.train.Saver(sharded=True).save(sess, str(out / "sharded" / "model.ckpt"))


def _many_blocks(tf: Any, out: Path) -> None:
    """Enough distinct keys that the index has several data blocks, plus a sliced variable."""
    import hashlib

    (out / "many").mkdir(parents=True, exist_ok=True)
    names = [f"k/{hashlib.sha256(str(i).encode()).hexdigest()}" for i in range(5000)]
    tensors = [tf.constant([float(i)]) for i in range(len(names))]
    tf.raw_ops.SaveV2(
        prefix=str(out / "many" / "big"),
        tensor_names=[*names, "part", "part"],
        shape_and_slices=[""] * len(names) + ["4 0,2", "4 2,2"],
        tensors=[*tensors, tf.constant([1.0, 2.0]), tf.constant([3.0, 4.0])],
    )


def _keras(tf: Any, np: Any, out: Path) -> dict[str, Any]:
    """A tiny Keras 3 model with three BN flavours, saved every way Keras and TF save it."""
    import keras

    keras.utils.set_random_seed(SEED)
    inputs = keras.Input((4, 4, 2))
    x = keras.layers.Conv2D(3, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn_full")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.BatchNormalization(name="bn_noscale", scale=False)(x)
    x = keras.layers.BatchNormalization(name="bn_nocenter", center=False)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    model.compile(keras.optimizers.Adam(0.05), "mse")
    data = np.random.default_rng(SEED).normal(size=(16, 4, 4, 2)).astype("float32")
    model.fit(data, np.ones((16, 2), "float32"), epochs=2, verbose=0)

    tf.train.Checkpoint(model=model, optimizer=model.optimizer).save(str(out / "tf2" / "ckpt"))
    tf.train.Checkpoint(model=model).write(str(out / "tf2_model" / "ckpt"))
    model.save_weights(str(out / "model.weights.h5"))
    model.save(str(out / "model.keras"))
    tf.saved_model.save(model, str(out / "saved_model"))

    bn = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            bn[layer.name] = {
                role: np.array(getattr(layer, role).numpy())
                for role in ("gamma", "beta", "moving_mean", "moving_variance")
                if getattr(layer, role) is not None
            }
    return bn


def _module(tf: Any, out: Path) -> None:
    """A `tf.Module` with hand-written BN variables, saved by `tf.train.Checkpoint`."""

    class Norm(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.scale = tf.Variable([1.0, 1.1], name="scale")
            self.offset = tf.Variable([0.0, 0.1], name="offset")
            self.pop_mean = tf.Variable([0.3, 0.4], trainable=False, name="pop_mean")
            self.pop_var = tf.Variable([2.0, 3.0], trainable=False, name="pop_var")

    net = tf.Module()
    net.bn1 = Norm()
    net.dense = tf.Variable([[1.0]])
    tf.train.Checkpoint(model=net).write(str(out / "module" / "ckpt"))


def main(out: Path) -> None:
    import numpy as np
    import tensorflow as tf

    tf.random.set_seed(SEED)
    _tf1(tf, np, out)
    _many_blocks(tf, out)
    keras_bn = _keras(tf, np, out)
    _module(tf, out)

    prefixes = {
        "tf1": out / "tf1" / "model.ckpt-20",
        "trainable": out / "trainable" / "model.ckpt",
        "sharded": out / "sharded" / "model.ckpt",
        "many": out / "many" / "big",
        "tf2": out / "tf2" / "ckpt-1",
        "tf2_model": out / "tf2_model" / "ckpt",
        "saved_model": out / "saved_model" / "variables" / "variables",
        "module": out / "module" / "ckpt",
    }
    tensors: dict[str, dict[str, Any]] = {}
    for name, prefix in prefixes.items():
        reader = tf.train.load_checkpoint(str(prefix))
        dtypes = reader.get_variable_to_dtype_map()
        values = {}
        for key, dtype in dtypes.items():
            value = reader.get_tensor(key)
            if dtype == tf.bfloat16:  # keep the pickle free of ml_dtypes
                value = value.astype(np.float32)
            values[key] = (dtype.name, value)
        tensors[name] = values
    reference = {"prefixes": {k: str(v) for k, v in prefixes.items()}, "tensors": tensors}
    reference["keras_bn"] = keras_bn
    with (out / "reference.pkl").open("wb") as file:
        pickle.dump(reference, file)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
