"""Keras weights: a `.weights.h5` (Keras 3), a legacy tf-keras `.h5`, or a `.keras` archive.

Read with h5py, imported only here. A `.keras` file's `config.json` says which layers are
`BatchNormalization` and with which options.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

from bnaudit.checkpoint.base import Checkpoint, VariableInfo
from bnaudit.errors import BnauditError
from bnaudit.formats.signatures import HDF5_MAGIC, ZIP_MAGIC


@dataclass
class KerasLayer:
    """A layer that owns variables in a Keras weights file, in file order."""

    path: str
    """HDF5 group of the layer (`layers/batch_normalization_1`)."""
    name: str
    """The user's layer name (`bn2`), or the group's base name when the file lacks it."""
    keys: list[str]
    """Dataset paths of its variables, in the order the layer created them."""
    class_name: str | None = None
    """The Keras class (`BatchNormalization`) when config.json or the group name tells."""
    config: dict[str, Any] | None = None
    """The layer's config from config.json (`.keras` only)."""
    weight_names: list[str] = field(default_factory=list)
    """Variable names (`bn/gamma:0`) that legacy tf-keras `.h5` files store; empty otherwise."""


# What h5py raises when the file's own structure is damaged (it has no exception root).
_H5_DAMAGE = (OSError, RuntimeError, KeyError, TypeError, ValueError)


@contextmanager
def _intact_h5(path: Path) -> Iterator[None]:
    """Turn h5py's errors about a damaged file into one line that says so."""
    try:
        yield
    except _H5_DAMAGE as exc:
        raise BnauditError(
            f"{path} is damaged: HDF5 could not read it ({exc}); pass an intact copy"
        ) from None


class KerasCheckpoint(Checkpoint):
    """A Keras weights file (`.weights.h5`, legacy tf-keras `.h5`) or a `.keras` archive."""

    def __init__(self, path: Path, notes: list[str]) -> None:
        import h5py  # only Keras files need it

        self.path = path
        self.notes = notes
        self._spool: IO[bytes] | None = None
        config: dict[str, Any] | None = None
        try:
            if zipfile.is_zipfile(path):
                self.kind = "keras-archive"
                config, self._spool = _open_archive(path)
                self._h5 = h5py.File(self._spool, "r")
            else:
                self._h5 = h5py.File(path, "r")
                self.kind = "keras-h5"
        except (OSError, zipfile.BadZipFile) as exc:
            self.close()
            raise BnauditError(f"cannot read {path} as a Keras weights file ({exc})") from None
        with _intact_h5(path):
            if "layer_names" in self._h5.attrs:
                self.kind = "keras-legacy-h5" if self.kind == "keras-h5" else self.kind
                self.layers = _legacy_layers(self._h5)
            else:
                self.layers = _keras3_layers(self._h5)
        self.layer_configs = _config_layers(config) if config else None
        if self.layer_configs is not None:
            by_name = {c.get("config", {}).get("name"): c for c in self.layer_configs}
            for layer in self.layers:
                found = by_name.get(layer.name)
                if found is not None:
                    layer.class_name = str(found.get("class_name"))
                    layer.config = found.get("config")

    def variables(self) -> list[VariableInfo]:
        import h5py

        found: list[VariableInfo] = []

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                dtype = "string" if obj.dtype.kind in "OSU" else str(obj.dtype)
                found.append(VariableInfo(name, dtype, tuple(int(d) for d in obj.shape)))

        with _intact_h5(self.path):
            self._h5.visititems(visit)
        return sorted(found, key=lambda v: v.key)

    def read(self, key: str) -> NDArray[Any]:
        import h5py

        with _intact_h5(self.path):
            obj = self._h5.get(key)
            if isinstance(obj, h5py.Dataset):
                return np.asarray(obj[()])
        raise KeyError(key)

    def close(self) -> None:
        h5 = getattr(self, "_h5", None)
        if h5 is not None:
            h5.close()
        if self._spool is not None:
            self._spool.close()  # an anonymous temporary file: closing deletes it
            self._spool = None


def _open_archive(path: Path) -> tuple[dict[str, Any] | None, IO[bytes]]:
    """config.json and a spooled copy of model.weights.h5 from a `.keras` zip.

    The weights are copied to an anonymous temporary file rather than read from the zip
    member, because h5py seeks back and forth and a zip member only streams forward.
    """
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        if "model.weights.h5" not in names:
            raise BnauditError(
                f"{path} is a zip file without model.weights.h5; pass a .keras file "
                "saved by model.save(...) or its .weights.h5"
            )
        config = json.loads(archive.read("config.json")) if "config.json" in names else None
        # Not a `with`: the caller owns the file until the checkpoint is closed.
        spool = tempfile.TemporaryFile()  # noqa: SIM115
        with archive.open("model.weights.h5") as member:
            shutil.copyfileobj(member, spool)
        spool.seek(0)
    return config, spool


def _natural_key(name: str) -> tuple[str, int]:
    """Sort `batch_normalization_10` after `_9`: Keras numbers repeated classes in model order."""
    match = re.fullmatch(r"(.*?)(?:_(\d+))?", name)
    assert match is not None
    return match.group(1), int(match.group(2)) if match.group(2) else -1


def _keras3_layers(h5: Any) -> list[KerasLayer]:
    """Every group holding a `vars` subgroup of a Keras 3 `.weights.h5`, in model order."""
    import h5py

    layers: list[KerasLayer] = []

    def walk(group: Any, path: str) -> None:
        for child in sorted(group.keys(), key=_natural_key):
            obj = group[child]
            if not isinstance(obj, h5py.Group):
                continue
            child_path = f"{path}/{child}" if path else child
            if child == "vars":
                keys = sorted(obj.keys(), key=lambda k: int(k) if k.isdigit() else 1 << 30)
                if keys and path:
                    name = obj.attrs.get("name", path.rsplit("/", 1)[-1])
                    layers.append(
                        KerasLayer(
                            path=path,
                            name=name.decode() if isinstance(name, bytes) else str(name),
                            keys=[f"{child_path}/{k}" for k in keys],
                        )
                    )
            else:
                walk(obj, child_path)

    walk(h5, "")
    return layers


def _legacy_layers(h5: Any) -> list[KerasLayer]:
    """Layers of a tf-keras `save_weights('x.h5')` file, listed by its `layer_names` attribute."""
    root = h5.get("model_weights", h5)
    layers = []
    for raw in root.attrs["layer_names"]:
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        group = root[name]
        weight_names = [
            w.decode() if isinstance(w, bytes) else str(w)
            for w in group.attrs.get("weight_names", [])
        ]
        if not weight_names:
            continue
        prefix = f"model_weights/{name}" if root is not h5 else name
        layers.append(
            KerasLayer(
                path=prefix,
                name=name,
                keys=[f"{prefix}/{w}" for w in weight_names],
                weight_names=weight_names,
            )
        )
    return layers


def _config_layers(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Layer configs of config.json in model order, nested models flattened in place."""
    found: list[dict[str, Any]] = []

    def walk(node: dict[str, Any]) -> None:
        inner = node.get("config", {})
        layers = inner.get("layers") if isinstance(inner, dict) else None
        if isinstance(layers, list):
            for layer in layers:
                if isinstance(layer, dict):
                    found.append(layer)
                    walk(layer)

    walk(config)
    return found


class KerasFormat:
    """Keras weights files: HDF5 (`.weights.h5`, legacy `.h5`) or a zip (`.keras`)."""

    name = "Keras weights"

    def recognizes(self, path: Path, head: bytes) -> bool:
        return head.startswith((HDF5_MAGIC, ZIP_MAGIC))

    def open(self, path: Path) -> Checkpoint:
        return KerasCheckpoint(path, [])
