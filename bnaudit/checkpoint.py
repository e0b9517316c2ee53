"""Open the checkpoints users have (Saver prefixes, object checkpoints, SavedModels, Keras files).

`open_checkpoint` resolves whatever path the user passed to one `Checkpoint`, saying in
`notes` what it guessed, and raises `BnauditError` with a one-line fix when it cannot. No
TensorFlow import: tensor bundles are read by `bnaudit.bundle`, Keras files with h5py.
"""

from __future__ import annotations

import codecs
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

from bnaudit.bundle import OBJECT_GRAPH_KEY, Bundle, dtype_name
from bnaudit.errors import BnauditError

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_ZIP_SIGNATURE = b"PK\x03\x04"
_INDEX_MAGIC = bytes.fromhex("57fb808b247547db")  # LevelDB table magic, little-endian
_DATA_FILE = re.compile(r"^(?P<prefix>.+)\.data-\d{5}-of-\d{5}$")
_CHECKPOINT_LINE = re.compile(r'^\s*model_checkpoint_path:\s*"(?P<path>(?:[^"\\]|\\.)*)"')
_WHAT_TO_PASS = (
    "pass a checkpoint prefix (dir/model.ckpt-1000), a directory with a `checkpoint` file, "
    "a SavedModel directory, a .weights.h5 or a .keras file"
)


@dataclass(frozen=True)
class VariableInfo:
    """One variable stored in a checkpoint."""

    key: str
    """The key `Checkpoint.read` takes (bundle key, or HDF5 dataset path)."""
    dtype: str
    """numpy-style dtype name (`float32`, `bfloat16`, `string`)."""
    shape: tuple[int, ...]
    """The variable's shape."""


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


class Checkpoint:
    """Variables from one checkpoint, whatever its format."""

    kind: str
    """`tf1-saver`, `tf2-object`, `saved-model`, `keras-h5`, `keras-legacy-h5`, `keras-archive`."""
    path: Path
    """The resolved checkpoint: a bundle prefix or the Keras file."""
    notes: list[str]
    """What was guessed while opening (which prefix, which file), for the report."""

    def variables(self) -> list[VariableInfo]:
        """Every stored variable, sorted by key."""
        raise NotImplementedError

    def read(self, key: str) -> NDArray[Any]:
        """One variable's value; raises KeyError for an unknown key."""
        raise NotImplementedError

    def close(self) -> None:
        """Release open files."""

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BundleCheckpoint(Checkpoint):
    """A tensor bundle: TF1 `Saver`, TF2 `tf.train.Checkpoint`, or a SavedModel's variables."""

    def __init__(self, prefix: Path, kind: str | None, notes: list[str]) -> None:
        self.bundle = Bundle(prefix)
        missing = self.bundle.missing_shards()
        if missing:
            raise BnauditError(
                f"checkpoint data file {missing[0]} is missing; copy every "
                f"{prefix.name}.data-* file beside {prefix.name}.index"
            )
        has_graph = OBJECT_GRAPH_KEY in self.bundle.entries
        self.kind = kind or ("tf2-object" if has_graph else "tf1-saver")
        self.path = prefix
        self.notes = notes
        self._object_graph: Any | None = None

    def variables(self) -> list[VariableInfo]:
        return [
            VariableInfo(e.key, dtype_name(e.dtype), e.shape)
            for e in sorted(self.bundle.entries.values(), key=lambda e: e.key)
        ]

    def read(self, key: str) -> NDArray[Any]:
        return self.bundle.read(key)

    def object_graph(self) -> Any | None:
        """The parsed `TrackableObjectGraph`, or None for a TF1 `Saver` checkpoint."""
        if self._object_graph is None:
            self._object_graph = self.bundle.object_graph()
        return self._object_graph


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


def _read_head(path: Path, size: int = 16) -> bytes:
    with path.open("rb") as file:
        return file.read(size)


def _from_checkpoint_file(directory: Path, state_file: Path) -> tuple[Path, list[str]]:
    """The latest prefix named by a `checkpoint` state file."""
    latest = None
    for line in state_file.read_text(errors="replace").splitlines():
        match = _CHECKPOINT_LINE.match(line)
        if match:
            # Text-format strings carry C escapes (octal bytes for non-ASCII paths).
            raw, _ = codecs.escape_decode(match.group("path").encode())
            latest = raw.decode("utf-8", "replace")
            break
    if latest is None:
        raise BnauditError(
            f"{state_file} names no model_checkpoint_path; pass a checkpoint prefix instead"
        )
    named = Path(latest)
    prefix = named if named.is_absolute() else directory / named
    notes = [f"using the latest checkpoint {prefix.name}, named in {state_file}"]
    if not Path(f"{prefix}.index").is_file():
        # Directories are often copied elsewhere after training; the state file keeps the
        # old absolute path, so look for the same prefix beside it.
        local = directory / named.name
        if named.is_absolute() and Path(f"{local}.index").is_file():
            notes = [
                f"{state_file} names {named}, which does not exist; using {local.name} "
                "from the same directory"
            ]
            return local, notes
        raise BnauditError(
            f"{state_file} names checkpoint {latest}, but {prefix}.index does not exist; "
            "pass an existing checkpoint prefix or fix the `checkpoint` file"
        )
    return prefix, notes


def _prefixes_in(directory: Path) -> list[Path]:
    return sorted(p.with_suffix("") for p in directory.glob("*.index"))


def _open_directory(directory: Path) -> Checkpoint:
    if (directory / "saved_model.pb").is_file() or (directory / "saved_model.pbtxt").is_file():
        prefix = directory / "variables" / "variables"
        if not Path(f"{prefix}.index").is_file():
            raise BnauditError(
                f"SavedModel {directory} has no variables/variables.index (a SavedModel of "
                "constants has no checkpoint); pass the checkpoint the model was trained with"
            )
        return BundleCheckpoint(prefix, "saved-model", [])
    state_file = directory / "checkpoint"
    if state_file.is_file():
        prefix, notes = _from_checkpoint_file(directory, state_file)
        return BundleCheckpoint(prefix, None, notes)
    prefixes = _prefixes_in(directory)
    if len(prefixes) == 1:
        note = f"{directory} has no `checkpoint` file; using its only checkpoint {prefixes[0].name}"
        return BundleCheckpoint(prefixes[0], None, [note])
    if prefixes:
        names = ", ".join(p.name for p in prefixes[:4])
        raise BnauditError(
            f"{directory} holds several checkpoints ({names}) and no `checkpoint` file; "
            "pass one prefix, e.g. " + str(prefixes[-1])
        )
    raise BnauditError(f"{directory} holds no checkpoint or SavedModel; {_WHAT_TO_PASS}")


def _open_file(path: Path) -> Checkpoint:
    name = path.name
    if name == "checkpoint":
        return _open_directory(path.parent)
    data_match = _DATA_FILE.match(name)
    prefix: Path | None = None
    for suffix in (".index", ".meta"):
        if name.endswith(suffix) and len(name) > len(suffix):
            prefix = path.with_name(name[: -len(suffix)])
            break
    else:
        prefix = path.with_name(data_match.group("prefix")) if data_match else None
    if prefix is not None:
        note = f"{name} is one file of a checkpoint; using its prefix {prefix.name}"
        if not Path(f"{prefix}.index").is_file():
            raise BnauditError(
                f"{name} is one file of checkpoint {prefix.name}, but {prefix.name}.index is "
                "missing; pass a complete checkpoint"
            )
        return BundleCheckpoint(prefix, None, [note])
    head = _read_head(path)
    if head.startswith(_HDF5_SIGNATURE) or head.startswith(_ZIP_SIGNATURE):
        return KerasCheckpoint(path, [])
    if name == "saved_model.pb":
        return _open_directory(path.parent)
    if name.endswith((".pb", ".pbtxt", ".tflite", ".onnx")):
        raise BnauditError(
            f"{name} is a model graph, not a checkpoint; pass the checkpoint it was frozen "
            "from (a prefix such as dir/model.ckpt-1000, a .weights.h5 or a .keras file)"
        )
    if path.stat().st_size >= 48 and _read_tail(path) == _INDEX_MAGIC:
        raise BnauditError(
            f"{name} looks like a checkpoint index without the .index suffix; rename it "
            f"{name}.index and pass the prefix {name}"
        )
    raise BnauditError(f"{path} is not a checkpoint bnaudit can read; {_WHAT_TO_PASS}")


def _read_tail(path: Path) -> bytes:
    with path.open("rb") as file:
        file.seek(-8, 2)
        return file.read(8)


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Open the checkpoint at `path`: a prefix, one of its files, a directory, or a Keras file."""
    given = Path(path)
    if given.is_dir():
        return _open_directory(given.resolve())
    if given.is_file():
        return _open_file(given.resolve())
    if Path(f"{given}.index").is_file():
        return BundleCheckpoint(given.resolve(), None, [])
    parent = given.parent if given.parent.is_dir() else None
    similar = sorted(parent.glob(f"{given.name}*.index")) if parent else []
    if similar:
        options = ", ".join(p.name[: -len(".index")] for p in similar[-3:])
        raise BnauditError(
            f"no checkpoint {given}; the directory holds {options}: pass one of those prefixes"
        )
    raise BnauditError(f"{given} does not exist; {_WHAT_TO_PASS}")
