"""Moving-average shadows: found by their name beside the variable they average."""

from __future__ import annotations

import numpy as np
from fakes import MemoryCheckpoint

from bnaudit.audit.ema import shadows


def test_shadows_are_named_after_the_ema_beside_their_variable() -> None:
    keys = (
        "bn/gamma",
        "bn/gamma/ExponentialMovingAverage",
        "bn/beta",
        "bn/beta/model_ema",  # an EMA given a name
        "bn/moving_mean",
        "bn/moving_mean/schema",  # no EMA name
        "orphan/ExponentialMovingAverage",  # beside no variable
    )
    ckpt = MemoryCheckpoint({key: np.zeros(2) for key in keys})
    assert shadows(ckpt) == {
        "bn/gamma": "bn/gamma/ExponentialMovingAverage",
        "bn/beta": "bn/beta/model_ema",
    }
