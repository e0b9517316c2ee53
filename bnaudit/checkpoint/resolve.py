"""Open the checkpoints users have (Saver prefixes, object checkpoints, SavedModels, Keras files).

`open_checkpoint` resolves whatever path the user passed to one `Checkpoint`, saying in
`notes` what it guessed, and raises `BnauditError` with a one-line fix when it cannot. No
TensorFlow import: tensor bundles are read by `bundle`, Keras files with h5py.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path

from bnaudit.checkpoint.base import Checkpoint, CheckpointFormat
from bnaudit.checkpoint.bundled import BundleCheckpoint
from bnaudit.checkpoint.keras import KerasFormat
from bnaudit.errors import BnauditError
from bnaudit.files import TEXT_LIMIT, file_size, is_dir, is_file, read_bytes, resolved, shown
from bnaudit.formats.signatures import DATA_SHARD, head, is_leveldb_table

_CHECKPOINT_LINE = re.compile(r'^\s*model_checkpoint_path:\s*"(?P<path>(?:[^"\\]|\\.)*)"')
FILE_FORMATS: tuple[CheckpointFormat, ...] = (KerasFormat(),)
"""Single-file checkpoint formats, recognised by content; a new one is a module and a line here."""
_WHAT_TO_PASS = (
    "pass a checkpoint prefix (dir/model.ckpt-1000), a directory with a `checkpoint` file, "
    "a SavedModel directory, a .weights.h5 or a .keras file"
)


def _from_checkpoint_file(directory: Path, state_file: Path) -> tuple[Path, list[str]]:
    """The latest prefix named by a `checkpoint` state file."""
    latest = None
    text = read_bytes(state_file, "a `checkpoint` state file", TEXT_LIMIT).decode(errors="replace")
    for line in text.splitlines():
        match = _CHECKPOINT_LINE.match(line)
        if match:
            # Text-format strings carry C escapes (octal bytes for non-ASCII paths).
            try:
                raw, _ = codecs.escape_decode(match.group("path").encode())
            except ValueError as error:
                raise BnauditError(
                    f"{shown(state_file)} names a checkpoint path that does not decode "
                    f"({error}); pass a checkpoint prefix instead"
                ) from None
            latest = raw.decode("utf-8", "replace")
            break
    if latest is None:
        raise BnauditError(
            f"{state_file} names no model_checkpoint_path; pass a checkpoint prefix instead"
        )
    named = Path(latest)
    prefix = named if named.is_absolute() else directory / named
    notes = [f"using the latest checkpoint {prefix.name}, named in {state_file}"]
    if not is_file(Path(f"{prefix}.index")):
        # Directories are often copied elsewhere after training; the state file keeps the
        # old absolute path, so look for the same prefix beside it.
        local = directory / named.name
        if named.is_absolute() and is_file(Path(f"{local}.index")):
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
    if is_file(directory / "saved_model.pb") or is_file(directory / "saved_model.pbtxt"):
        prefix = directory / "variables" / "variables"
        if not is_file(Path(f"{prefix}.index")):
            raise BnauditError(
                f"SavedModel {directory} has no variables/variables.index (a SavedModel of "
                "constants has no checkpoint); pass the checkpoint the model was trained with"
            )
        return BundleCheckpoint(prefix, "saved-model", [])
    state_file = directory / "checkpoint"
    if is_file(state_file):
        prefix, notes = _from_checkpoint_file(directory, state_file)
        return BundleCheckpoint(prefix, None, notes, named_by=state_file)
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
    file_size(path, "a checkpoint", limit=2**63)  # a regular file, never a pipe or device
    name = path.name
    if name == "checkpoint":
        return _open_directory(path.parent)
    data_match = DATA_SHARD.match(name)
    prefix: Path | None = None
    for suffix in (".index", ".meta"):
        if name.endswith(suffix) and len(name) > len(suffix):
            prefix = path.with_name(name[: -len(suffix)])
            break
    else:
        prefix = path.with_name(data_match.group("prefix")) if data_match else None
    if prefix is not None:
        note = f"{name} is one file of a checkpoint; using its prefix {prefix.name}"
        if not is_file(Path(f"{prefix}.index")):
            raise BnauditError(
                f"{name} is one file of checkpoint {prefix.name}, but {prefix.name}.index is "
                "missing; pass a complete checkpoint"
            )
        return BundleCheckpoint(prefix, None, [note])
    first = head(path)
    for checkpoint_format in FILE_FORMATS:
        if checkpoint_format.recognizes(path, first):
            return checkpoint_format.open(path)
    if name == "saved_model.pb":
        return _open_directory(path.parent)
    if name.endswith((".pb", ".pbtxt", ".tflite", ".onnx")):
        raise BnauditError(
            f"{name} is a model graph, not a checkpoint; pass the checkpoint it was frozen "
            "from (a prefix such as dir/model.ckpt-1000, a .weights.h5 or a .keras file)"
        )
    if is_leveldb_table(path):
        raise BnauditError(
            f"{name} looks like a checkpoint index without the .index suffix; rename it "
            f"{name}.index and pass the prefix {name}"
        )
    raise BnauditError(f"{path} is not a checkpoint bnaudit can read; {_WHAT_TO_PASS}")


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Open the checkpoint at `path`: a prefix, one of its files, a directory, or a Keras file."""
    given = Path(path)
    if is_dir(given):
        return _open_directory(resolved(given))
    if given.exists():
        return _open_file(resolved(given))
    if is_file(Path(f"{given}.index")):
        return BundleCheckpoint(resolved(given), None, [])
    parent = given.parent if given.parent.is_dir() else None
    similar = sorted(parent.glob(f"{given.name}*.index")) if parent else []
    if similar:
        options = ", ".join(p.name[: -len(".index")] for p in similar[-3:])
        raise BnauditError(
            f"no checkpoint {given}; the directory holds {options}: pass one of those prefixes"
        )
    raise BnauditError(f"{given} does not exist; {_WHAT_TO_PASS}")
