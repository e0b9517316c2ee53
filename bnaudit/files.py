"""Opening the files a user names, safely: regular files only, sizes bounded before reading.

A FIFO would block a read forever, `/dev/zero` never ends, and a sparse or hostile file can
declare gigabytes; each is refused here, with a one-line reason, before a byte is read.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from bnaudit.errors import BnauditError

GRAPH_LIMIT = 2**31 - 1
"""Protocol buffers cannot hold a message of 2 GiB or more, so neither can a GraphDef."""
INDEX_LIMIT = 64 * 2**20
"""A checkpoint index lists keys and offsets, about 100 bytes a tensor: 64 MB is over half a
million tensors."""
META_LIMIT = 256 * 2**20
"""A `.meta` holds a training graph without its weights: tens of megabytes at most."""
TEXT_LIMIT = 2**20
"""A `checkpoint` state file, or a `.keras` file's small JSON members' sum is far below."""


def shown(path: Path | str) -> str:
    """A path as messages show it: control characters escaped, so a message stays one line."""
    text = str(path)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def file_size(path: Path, what: str, limit: int) -> int:
    """The size of the regular file at `path`; a BnauditError when it is not one or too big."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise BnauditError(f"{shown(path)}: no such file; pass {what}") from None
    except OSError as error:
        raise BnauditError(f"cannot read {shown(path)}: {error.strerror}; pass {what}") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise BnauditError(f"{shown(path)} is {kind} (a pipe or device?); pass {what}")
    if info.st_size > limit:
        raise BnauditError(
            f"{shown(path)} is {info.st_size / 2**30:.1f} GiB, more than {what} can be "
            f"({limit / 2**30:.1f} GiB at most); pass {what}"
        )
    return info.st_size


def read_bytes(path: Path, what: str, limit: int) -> bytes:
    """The whole of a regular file no larger than `limit`."""
    size = file_size(path, what, limit)
    try:
        with path.open("rb") as file:
            return file.read(size)  # exactly what was checked, even if the file grows
    except OSError as error:
        raise BnauditError(f"cannot read {shown(path)}: {error.strerror}") from None


def is_dir(path: Path) -> bool:
    """`path.is_dir()`, with names the system refuses (too long, ...) as a BnauditError."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except FileNotFoundError:
        return False
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            return False
        raise BnauditError(f"cannot use the path {shown(path)}: {error.strerror}") from None


def is_file(path: Path) -> bool:
    """`path.is_file()`, with names the system refuses (too long, ...) as a BnauditError."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            return False
        raise BnauditError(f"cannot use the path {shown(path)}: {error.strerror}") from None


def resolved(path: Path) -> Path:
    """`path.resolve()`, with a symbolic-link loop as a BnauditError."""
    try:
        return path.resolve()
    except (RuntimeError, OSError) as error:
        raise BnauditError(f"cannot resolve the path {shown(path)}: {error}") from None
