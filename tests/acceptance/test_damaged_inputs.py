"""Damaged files get a one-line reason, never the catch-all "could not process" or a traceback.

Seeded corruptions (truncation, flipped bytes, cut runs) of real fixtures: the files
users actually end up with after a failed copy or download.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import MODELS

from bnaudit.cli import main

GRAPHS = ["tf1_fused_cond", "tf2_if_fused", "keras3_bn", "tf1_custom_fused"]
CHECKPOINTS = [
    (
        "tf1_fused_cond",
        "ckpt",
        ["ckpt/model.ckpt-20.index", "ckpt/model.ckpt-20.data-00000-of-00001"],
    ),
    ("keras3_bn", "ckpt/ckpt", ["ckpt/ckpt.index", "ckpt/ckpt.data-00000-of-00001"]),
    ("keras3_bn", "model.weights.h5", ["model.weights.h5"]),
    ("keras3_bn", "model.keras", ["model.keras"]),
]


def _damage(data: bytes, rng: random.Random) -> bytes:
    damaged = bytearray(data)
    kind = rng.choice(["truncate", "flip", "cut"])
    if kind == "truncate":
        return bytes(damaged[: rng.randrange(0, len(damaged))])
    if kind == "flip":
        for _ in range(rng.randrange(1, 8)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        return bytes(damaged)
    start = rng.randrange(len(damaged))
    del damaged[start : start + rng.randrange(1, 64)]
    return bytes(damaged)


def _assert_handled(exit_code: int, stderr: str) -> None:
    assert exit_code in (0, 1, 3), stderr
    assert "Traceback" not in stderr
    assert "could not process" not in stderr, stderr


@pytest.mark.parametrize("seed", range(4))
def test_damaged_graphs(seed: int, runner: CliRunner, tmp_path: Path) -> None:
    rng = random.Random(seed)
    for index in range(40):
        source = MODELS / rng.choice(GRAPHS) / "frozen.pb"
        path = tmp_path / f"damaged{index}.pb"
        path.write_bytes(_damage(source.read_bytes(), rng))
        result = runner.invoke(main, ["list-bn", str(path), "--format", "json"])
        _assert_handled(result.exit_code, result.stderr)


@pytest.mark.parametrize("seed", range(4))
def test_damaged_checkpoints(seed: int, runner: CliRunner, tmp_path: Path) -> None:
    rng = random.Random(seed)
    for index in range(30):
        name, checkpoint, files = rng.choice(CHECKPOINTS)
        copy = tmp_path / f"m{index}"
        shutil.copytree(MODELS / name, copy)
        target = copy / rng.choice(files)
        target.write_bytes(_damage(target.read_bytes(), rng))
        args = ["compare", str(copy / checkpoint), str(copy / "frozen.pb"), "--no-run"]
        result = runner.invoke(main, [*args, "--format", "json"])
        _assert_handled(result.exit_code, result.stderr)
        shutil.rmtree(copy)
