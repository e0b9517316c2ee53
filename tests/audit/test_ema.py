"""Moving-average shadows: found by their name beside the variable they average."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from bnaudit.audit.ema import shadows
from bnaudit.checkpoint.base import Checkpoint, VariableInfo


class _Ckpt(Checkpoint):
    def __init__(self, keys: list[str]) -> None:
        self.keys = keys

    def variables(self) -> list[VariableInfo]:
        return [VariableInfo(k, "float32", (2,)) for k in self.keys]

    def read(self, key: str) -> NDArray[Any]:
        return np.zeros(2)


def test_shadows_are_named_after_the_ema_beside_their_variable() -> None:
    ckpt = _Ckpt(
        [
            "bn/gamma",
            "bn/gamma/ExponentialMovingAverage",
            "bn/beta",
            "bn/beta/model_ema",  # an EMA given a name
            "bn/moving_mean",
            "bn/moving_mean/schema",  # no EMA name
            "orphan/ExponentialMovingAverage",  # beside no variable
        ]
    )
    assert shadows(ckpt) == {
        "bn/gamma": "bn/gamma/ExponentialMovingAverage",
        "bn/beta": "bn/beta/model_ema",
    }
