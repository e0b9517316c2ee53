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
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

from bnaudit.checkpoint.base import Checkpoint, VariableInfo
from bnaudit.errors import BnauditError
from bnaudit.files import shown
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
            by_name = {
                str(c["config"].get("name")): c
                for c in self.layer_configs
                if isinstance(c.get("config"), dict)
            }
            for layer in self.layers:
                found = by_name.get(layer.name)
                if found is not None:
                    layer.class_name = str(found.get("class_name"))
                    layer.config = found["config"]

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
            obj = _hard_linked(self._h5, key, self.path)
            if isinstance(obj, h5py.Dataset):
                return _dataset_value(obj, key, self.path)
        raise KeyError(key)

    def close(self) -> None:
        h5 = getattr(self, "_h5", None)
        if h5 is not None:
            h5.close()
        if self._spool is not None:
            self._spool.close()  # an anonymous temporary file: closing deletes it
            self._spool = None


MAX_TENSOR_BYTES = 256 * 2**20
"""The largest variable read from a Keras file: no BN parameter or kernel bnaudit folds is
near it, and a hostile file cannot make bnaudit allocate more."""
MAX_CONFIG_BYTES = 8 * 2**20
MAX_WEIGHTS_BYTES = 8 * 2**30
MAX_RATIO = 50
"""Weights barely compress; a member inflating more than this (past 64 MB) is a zip bomb."""


def _hard_linked(h5: Any, key: str, path: Path) -> Any:
    """The object at `key`, reached through hard links only (a soft or external link could
    point into another file, or anywhere in this one)."""
    import h5py

    obj = h5
    for part in key.strip("/").split("/"):
        link = obj.get(part, getlink=True) if isinstance(obj, h5py.Group) else None
        if link is None:
            return None
        if not isinstance(link, h5py.HardLink):
            raise BnauditError(
                f"{shown(path)}: {key!r} is a {type(link).__name__}, not data stored in the "
                "file; bnaudit reads only what the file holds: pass the weights file itself"
            )
        obj = obj[part]
    return obj


def _dataset_value(dataset: Any, key: str, path: Path) -> NDArray[Any]:
    """A dataset's value, after checking it is numeric, stored in this file and of sane size."""
    where = f"{shown(path)}: {key!r}"
    if dataset.external:
        raise BnauditError(f"{where} keeps its data in other files; pass a self-contained file")
    if dataset.dtype.fields is not None or dataset.dtype.kind not in "biuf":
        raise BnauditError(f"{where} is not a numeric tensor ({dataset.dtype}); pass Keras weights")
    if dataset.size * dataset.dtype.itemsize > MAX_TENSOR_BYTES:
        raise BnauditError(f"{where} declares {dataset.size:,} values; no layer has that many")
    if dataset.size and dataset.id.get_storage_size() == 0:
        raise BnauditError(f"{where} declares {dataset.size:,} values but stores none: damaged")
    return np.asarray(dataset[()])


def _member(archive: zipfile.ZipFile, name: str, limit: int, path: Path) -> zipfile.ZipInfo:
    """The archive member `name`, refused when encrypted, oversized or a zip bomb."""
    info = archive.getinfo(name)
    where = f"{shown(path)}: {name}"
    if info.flag_bits & 0x1:
        raise BnauditError(f"{where} is encrypted; pass a .keras file saved by Keras")
    if info.file_size > limit:
        raise BnauditError(f"{where} inflates to {info.file_size:,} bytes, over {limit:,}")
    big = info.file_size > 64 * 2**20
    if big and info.file_size > MAX_RATIO * max(1, info.compress_size):
        raise BnauditError(
            f"{where} inflates {info.file_size // max(1, info.compress_size):,} times (a zip "
            "bomb?); pass a .keras file saved by Keras"
        )
    return info


def _open_archive(path: Path) -> tuple[dict[str, Any] | None, IO[bytes]]:
    """config.json and a spooled copy of model.weights.h5 from a `.keras` zip.

    The weights are copied to an anonymous temporary file rather than read from the zip
    member, because h5py seeks back and forth and a zip member only streams forward. Sizes
    are checked before anything is inflated, and the copy stops at the declared size.
    """
    try:
        return _read_archive(path)
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, zlib.error, EOFError) as exc:
        raise BnauditError(
            f"{shown(path)}: cannot unpack it ({exc}); pass an intact .keras file"
        ) from None


def _read_archive(path: Path) -> tuple[dict[str, Any] | None, IO[bytes]]:
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        if "model.weights.h5" not in names:
            raise BnauditError(
                f"{shown(path)} is a zip file without model.weights.h5; pass a .keras file "
                "saved by model.save(...) or its .weights.h5"
            )
        config = None
        if "config.json" in names:
            _member(archive, "config.json", MAX_CONFIG_BYTES, path)
            config = _json(archive.read("config.json"), path)
        weights = _member(archive, "model.weights.h5", MAX_WEIGHTS_BYTES, path)
        free = shutil.disk_usage(tempfile.gettempdir()).free
        if weights.file_size > free:
            raise BnauditError(
                f"{shown(path)}: its weights need {weights.file_size:,} bytes of temporary "
                f"space, {tempfile.gettempdir()} has {free:,}; set TMPDIR to a roomier place"
            )
        # Not a `with`: the caller owns the file until the checkpoint is closed.
        spool = tempfile.TemporaryFile()  # noqa: SIM115
        with archive.open(weights) as member:
            shutil.copyfileobj(member, spool)
        spool.seek(0)
    return config, spool


def _json(data: bytes, path: Path) -> dict[str, Any] | None:
    try:
        config = json.loads(data)
    except (ValueError, RecursionError):
        raise BnauditError(
            f"{shown(path)}: config.json is not valid JSON; pass an intact .keras file"
        ) from None
    return config if isinstance(config, dict) else None


def _natural_key(name: str) -> tuple[str, int]:
    """Sort `batch_normalization_10` after `_9`: Keras numbers repeated classes in model order."""
    match = re.fullmatch(r"(.*?)(?:_(\d+))?", name)
    assert match is not None
    return match.group(1), int(match.group(2)) if match.group(2) else -1


def _keras3_layers(h5: Any) -> list[KerasLayer]:
    """Every group holding a `vars` subgroup of a Keras 3 `.weights.h5`, in model order.

    Only hard links are followed (a soft or external link is refused when read), and the walk
    keeps its own stack: a file nesting groups thousands deep cannot exhaust Python's.
    """
    import h5py

    layers: list[KerasLayer] = []
    pending: list[tuple[Any, str]] = [(h5, "")]
    seen: set[Any] = set()
    while pending:
        group, path = pending.pop()
        address = h5py.h5o.get_info(group.id).addr
        if address in seen:  # a hard link back to an ancestor: a cycle, walked once
            continue
        seen.add(address)
        children = []
        for child in sorted(group.keys(), key=_natural_key):
            if not isinstance(group.get(child, getlink=True), h5py.HardLink):
                continue
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
                            name=name.decode(errors="replace")
                            if isinstance(name, bytes)
                            else str(name),
                            keys=[f"{child_path}/{k}" for k in keys],
                        )
                    )
            else:
                children.append((obj, child_path))
        pending.extend(reversed(children))  # depth first, in order: the model's order
    return layers


def _legacy_layers(h5: Any) -> list[KerasLayer]:
    """Layers of a tf-keras `save_weights('x.h5')` file, listed by its `layer_names` attribute."""
    root = h5.get("model_weights", h5)
    layers = []
    for raw in root.attrs["layer_names"]:
        name = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        group = _hard_linked(root, name, Path(h5.filename))
        if group is None:
            continue
        weight_names = [
            w.decode(errors="replace") if isinstance(w, bytes) else str(w)
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
    """Layer configs of config.json in model order, nested models flattened in place.

    Walked with its own stack, and only through dicts and lists: the file is not trusted.
    """
    found: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = [config]
    while pending:
        node = pending.pop()
        inner = node.get("config")
        layers = inner.get("layers") if isinstance(inner, dict) else None
        if not isinstance(layers, list):
            continue
        nested = [layer for layer in layers if isinstance(layer, dict)]
        for layer in nested:
            found.append(layer)
        pending.extend(reversed(nested))
    return found


class KerasFormat:
    """Keras weights files: HDF5 (`.weights.h5`, legacy `.h5`) or a zip (`.keras`)."""

    name = "Keras weights"

    def recognizes(self, path: Path, head: bytes) -> bool:
        return head.startswith((HDF5_MAGIC, ZIP_MAGIC))

    def open(self, path: Path) -> Checkpoint:
        return KerasCheckpoint(path, [])
