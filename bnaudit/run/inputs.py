"""The arrays fed to both graphs: shapes from the placeholders, random or the user's data.

Every `Placeholder` of the graph gets an array: the user's (`--input`, `--inputs`), else a
seeded random one whose unknown first dimension is `--batch` (default 2: at least two
distinct samples, so a layer normalizing with the batch's statistics shows). Training
switches are never random: a bool scalar placeholder is fed only what `--feed` says, and one
without a default is fed False (inference) with a warning. A `PlaceholderWithDefault` keeps
its default unless the user feeds it: such inputs are often knobs (`keep_prob`), not data.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

from bnaudit.errors import BnauditError
from bnaudit.files import file_size, shown
from bnaudit.formats.tensors import NUMPY_DTYPES, shape_of

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Placeholder:
    """One input of the graph."""

    name: str
    """The node's name; its tensor is `name:0`."""
    dtype: np.dtype[Any] | None
    """None for a dtype bnaudit cannot make (strings, resources)."""
    shape: tuple[int, ...] | None
    """-1 for an unknown dimension; None when even the rank is unknown."""
    has_default: bool
    """A `PlaceholderWithDefault`: runs without being fed."""

    @property
    def is_switch(self) -> bool:
        """A bool scalar: a training (or dropout) switch, never random data."""
        return self.dtype == np.dtype(np.bool_) and self.shape in ((), None)


@dataclass(frozen=True)
class InputOptions:
    """What the user asked for on the command line."""

    batch: int = 2
    seed: int = 0
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """--shape NAME=1,224,224,3."""
    arrays: dict[str, NDArray[Any]] = field(default_factory=dict)
    """--input NAME=file.npy and --inputs file.npz, already loaded."""
    feeds: dict[str, str] = field(default_factory=dict)
    """--feed NAME=VALUE, as typed."""


@dataclass(frozen=True)
class Inputs:
    """What goes into the graphs."""

    arrays: dict[str, NDArray[Any]]
    """Placeholder name -> array, fed identically to both graphs."""
    switches: dict[str, NDArray[Any]]
    """Training switches fed to the frozen graph only (the reference runs in inference)."""
    warnings: tuple[str, ...]


def placeholders(graph_def: Any) -> list[Placeholder]:
    """The top-level placeholders of a GraphDef that something reads, in file order.

    Freezing can leave placeholders nothing consumes (`unused_control_flow_input`); they
    need no value, and asking the user for their shape would be noise.
    """
    used = {text.lstrip("^").split(":")[0] for node in graph_def.node for text in node.input}
    found = []
    for node in graph_def.node:
        if node.op not in ("Placeholder", "PlaceholderWithDefault") or node.name not in used:
            continue
        dtype = NUMPY_DTYPES.get(int(node.attr["dtype"].type) % 100)
        shape = shape_of(node.attr["shape"].shape) if "shape" in node.attr else None
        found.append(Placeholder(node.name, dtype, shape, node.op == "PlaceholderWithDefault"))
    return found


def tensor_name(name: str) -> str:
    """A user's `input` or `input:0` as the node name `input`."""
    return name[:-2] if name.endswith(":0") else name


def parse_assignment(text: str, option: str) -> tuple[str, str]:
    """`NAME=VALUE` as (name, value); raises ValueError naming the option."""
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise ValueError(f"{option} {text!r} is not NAME=VALUE")
    return tensor_name(name), value


def parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """`NAME=1,224,224,3` as (name, shape); raises ValueError."""
    name, value = parse_assignment(text, "--shape")
    try:
        dims = tuple(int(d) for d in value.replace("x", ",").split(",") if d.strip())
    except ValueError:
        raise ValueError(
            f"--shape {text!r}: dimensions must be integers, e.g. x=1,224,224,3"
        ) from None
    if any(d < 0 for d in dims):
        raise ValueError(f"--shape {text!r}: dimensions must be >= 0")
    return name, dims


MAX_INPUT_BYTES = 512 * 2**20
"""The most the arrays fed to one graph may hold, given or generated."""


def load_arrays(singles: list[tuple[str, Path]], archive: Path | None) -> dict[str, NDArray[Any]]:
    """Arrays from `--inputs file.npz` then `--input NAME=file.npy` (which win).

    Each file must be a regular file, and each array's header is read, and its size checked,
    before the array is: a header can declare terabytes.
    """
    arrays: dict[str, NDArray[Any]] = {}
    if archive is not None:
        file_size(archive, "an .npz file of input arrays", limit=2**63)
        try:
            with zipfile.ZipFile(archive) as members:
                for info in members.infolist():
                    with members.open(info) as member:
                        name = tensor_name(info.filename.removesuffix(".npy"))
                        arrays[name] = _read_npy(member, f"--inputs {archive} ({name})")
        except (
            OSError,
            ValueError,
            zipfile.BadZipFile,
            NotImplementedError,
            RuntimeError,
        ) as error:
            raise BnauditError(
                f"cannot read --inputs {shown(archive)} as an .npz file: {error}"
            ) from None
    for name, path in singles:
        file_size(path, f"an .npy file for --input {name}", limit=2**63)
        try:
            with path.open("rb") as file:
                arrays[name] = _read_npy(file, f"--input {name}={path}")
        except (OSError, ValueError) as error:
            raise BnauditError(
                f"cannot read --input {name}={shown(path)} as .npy: {error}"
            ) from None
    return arrays


def _read_npy(file: IO[bytes], what: str) -> NDArray[Any]:
    """One `.npy` array from an open file, its header checked before its data is read."""
    version = np.lib.format.read_magic(file)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(file)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(file)
    if dtype.hasobject:
        raise BnauditError(f"{what} holds Python objects, which bnaudit never loads")
    size = math.prod(shape) * dtype.itemsize
    if size > MAX_INPUT_BYTES:
        raise BnauditError(
            f"{what} declares {size / 2**20:,.0f} MB; bnaudit feeds at most "
            f"{MAX_INPUT_BYTES // 2**20} MB of inputs: pass a smaller batch"
        )
    data = file.read(size)
    if len(data) != size:
        raise BnauditError(f"{what} is truncated: {len(data)} of {size} bytes")
    array = np.frombuffer(data, dtype=dtype)
    order = "F" if fortran else "C"
    return array.reshape(shape[::-1]).transpose() if order == "F" else array.reshape(shape)


def save_arrays(path: Path, arrays: dict[str, NDArray[Any]]) -> None:
    """Write the fed arrays so `--inputs path` replays the run."""
    try:
        with path.open("wb") as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]
    except OSError as error:
        raise BnauditError(f"cannot write --save-inputs {path}: {error.strerror}") from None


def make_inputs(found: list[Placeholder], flags: set[str], options: InputOptions) -> Inputs:
    """The arrays for every placeholder; `flags` are the BN training flags detection found."""
    by_name = {p.name: p for p in found}
    known = ", ".join(by_name) or "none"
    for option, names in (
        ("--shape", options.shapes),
        ("--input/--inputs", options.arrays),
        ("--feed", options.feeds),
    ):
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise BnauditError(
                f"{option} names {', '.join(unknown)}, which is not a placeholder of the graph "
                f"(placeholders: {known})"
            )
    rng = np.random.default_rng(options.seed)
    arrays: dict[str, NDArray[Any]] = {}
    switches: dict[str, NDArray[Any]] = {}
    warnings: list[str] = []
    for holder in found:
        name = holder.name
        if name in options.feeds:
            value = _fed(holder, options.feeds[name], options)
            if holder.is_switch or name in flags:
                switches[name] = value
            else:
                arrays[name] = value
        elif name in options.arrays:
            arrays[name] = _checked(holder, options.arrays[name])
        elif holder.is_switch or name in flags:
            if not holder.has_default:
                switches[name] = np.asarray(False)
                warnings.append(
                    f"{name} has no default; fed False (inference) to the frozen graph: pass "
                    f"--feed {name}=true to run it the other way"
                )
        elif not holder.has_default:
            arrays[name] = _random(holder, _shape(holder, options), rng)
    return Inputs(arrays=arrays, switches=switches, warnings=tuple(warnings))


def _shape(holder: Placeholder, options: InputOptions) -> tuple[int, ...]:
    wanted = options.shapes.get(holder.name)
    if wanted is not None:
        if holder.shape is not None and not _fits(holder.shape, wanted):
            raise BnauditError(
                f"--shape {holder.name}={','.join(map(str, wanted))} does not fit the "
                f"placeholder's shape {_show(holder.shape)}"
            )
        return wanted
    if holder.shape is None:
        raise BnauditError(
            f"input {holder.name} has an unknown shape: pass --shape {holder.name}=D0,D1,... "
            f"or its data with --input {holder.name}=file.npy"
        )
    dims = [options.batch if i == 0 and d < 0 else d for i, d in enumerate(holder.shape)]
    if any(d < 0 for d in dims):
        example = ",".join(str(d) if d >= 0 else "N" for d in dims)
        raise BnauditError(
            f"input {holder.name} has unknown dimensions {_show(holder.shape)}: pass "
            f"--shape {holder.name}={example} with N filled in"
        )
    return tuple(dims)


def _fits(shape: tuple[int, ...], dims: tuple[int, ...]) -> bool:
    return len(shape) == len(dims) and all(
        s < 0 or s == d for s, d in zip(shape, dims, strict=True)
    )


def _show(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join("?" if d < 0 else str(d) for d in shape) + "]"


def _dtype(holder: Placeholder) -> np.dtype[Any]:
    if holder.dtype is None:
        raise BnauditError(
            f"input {holder.name} has a dtype bnaudit cannot generate: pass its data with "
            f"--input {holder.name}=file.npy"
        )
    return holder.dtype


def _random(holder: Placeholder, shape: tuple[int, ...], rng: np.random.Generator) -> NDArray[Any]:
    dtype = _dtype(holder)
    size = math.prod(shape) * dtype.itemsize
    if size > MAX_INPUT_BYTES:
        raise BnauditError(
            f"input {holder.name} of shape {_show(shape)} would take {size / 2**20:,.0f} MB of "
            f"random data, over {MAX_INPUT_BYTES // 2**20} MB: pass a smaller --batch, or "
            f"--shape {holder.name}=..."
        )
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if dtype == np.dtype(np.uint8):
        return rng.integers(0, 256, shape).astype(dtype)
    return rng.integers(0, 10, shape).astype(dtype)  # ids or labels: small, always valid


def _checked(holder: Placeholder, array: NDArray[Any]) -> NDArray[Any]:
    dtype = _dtype(holder)
    if holder.shape is not None and not _fits(holder.shape, array.shape):
        raise BnauditError(
            f"the data given for {holder.name} has shape {_show(array.shape)}; the placeholder "
            f"takes {_show(holder.shape)}"
        )
    if array.dtype != dtype and not np.can_cast(array.dtype, dtype, "same_kind"):
        raise BnauditError(
            f"the data given for {holder.name} is {array.dtype}; the placeholder takes {dtype}"
        )
    return array.astype(dtype, copy=False)


def _fed(holder: Placeholder, text: str, options: InputOptions) -> NDArray[Any]:
    dtype = _dtype(holder)
    if dtype.kind == "b":
        lowered = text.strip().lower()
        if lowered not in _TRUE | _FALSE:
            raise BnauditError(f"--feed {holder.name}={text}: expected true or false")
        value: Any = lowered in _TRUE
    else:
        try:
            value = float(text)
        except ValueError:
            raise BnauditError(f"--feed {holder.name}={text}: expected a number") from None
    shape = () if holder.shape in ((), None) else _shape(holder, options)
    return np.full(shape, value, dtype=dtype)
