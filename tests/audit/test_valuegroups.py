"""Groups by value: a hand-written BN whose variables no name marks as BN."""

from __future__ import annotations

from typing import Any

import numpy as np
from fakes import MemoryCheckpoint
from numpy.typing import NDArray

from bnaudit.audit.detect import BnLayer, Param
from bnaudit.audit.valuegroups import value_groups

_RNG = np.random.default_rng(5)


def _layer(values: dict[str, NDArray[Any]]) -> BnLayer:
    params = {role: Param("const", f"op_{role}/resource", v) for role, v in values.items()}
    return BnLayer(
        name="add_1", scope="add_1", op="decomposed", mode="inference", flag=None,
        epsilon=1e-3, channels=4, data_format="channels_last", params=params,  # type: ignore[arg-type]
        position=0, core_nodes=("Rsqrt",),
    )  # fmt: skip


def _values() -> dict[str, NDArray[Any]]:
    roles = ("gamma", "beta", "moving_mean", "moving_variance")
    return {role: _RNG.normal(size=4).astype(np.float32) for role in roles}


def test_odd_names_pair_by_value_under_one_parent() -> None:
    values = _values()
    names = {"gamma": "g", "beta": "b", "moving_mean": "mu", "moving_variance": "s2"}
    arrays = {f"net/n1/{names[r]}/.ATTRIBUTES/VARIABLE_VALUE": v for r, v in values.items()}
    arrays["net/dense/bias/.ATTRIBUTES/VARIABLE_VALUE"] = _RNG.normal(size=4)
    (group,) = value_groups([_layer(values)], MemoryCheckpoint(arrays), [])
    assert group.scope == "net/n1" and group.channels == 4
    assert group.keys["moving_variance"] == "net/n1/s2/.ATTRIBUTES/VARIABLE_VALUE"


def test_another_steps_values_or_scattered_variables_make_no_group() -> None:
    values = _values()
    stale = {f"net/n1/{r}x": v + 0.1 for r, v in values.items()}
    assert value_groups([_layer(values)], MemoryCheckpoint(stale), []) == []
    scattered = {f"net/part{i}/{r}": v for i, (r, v) in enumerate(values.items())}
    assert value_groups([_layer(values)], MemoryCheckpoint(scattered), []) == []


def test_constants_named_after_their_variables_pair_whatever_their_values() -> None:
    """A TF1 freeze keeps variable names (`blk0/nrm/stat_m/read`): a stale checkpoint still
    gives the group, so the difference is reported rather than the checkpoint refused."""
    values = _values()
    layer = _layer(values)
    names = {"gamma": "alpha", "beta": "offs", "moving_mean": "stat_m", "moving_variance": "stat_v"}
    params = {
        role: Param("const", f"blk0/nrm/{names[role]}/read", p.value)
        for role, p in layer.params.items()
    }
    layer = BnLayer(**{**layer.__dict__, "params": params})
    stale = {f"blk0/nrm/{names[r]}": v + 0.5 for r, v in values.items()}
    (group,) = value_groups([layer], MemoryCheckpoint(stale), [])
    assert group.scope == "blk0/nrm" and group.keys["moving_mean"] == "blk0/nrm/stat_m"


def test_one_stale_statistic_still_finds_its_group_through_the_others() -> None:
    """Three parameters equal variables under `net/n1`; the variance went stale: the one
    variable of its shape left under that parent is it, and compare reports the change."""
    values = _values()
    names = {"gamma": "g", "beta": "b", "moving_mean": "mu", "moving_variance": "s2"}
    arrays = {f"net/n1/{names[r]}": v for r, v in values.items()}
    arrays["net/n1/s2"] = values["moving_variance"] * 1.7
    arrays["net/n2/other"] = _RNG.normal(size=4)  # same shape, another parent: not it
    (group,) = value_groups([_layer(values)], MemoryCheckpoint(arrays), [])
    assert group.keys["moving_variance"] == "net/n1/s2"
    del arrays["net/n1/b"], arrays["net/n1/g"]  # one anchor left: not enough to say
    assert value_groups([_layer(values)], MemoryCheckpoint(arrays), []) == []
