"""How files announce what they are: magic numbers and the names checkpoints give their files.

Detection is by content first; names only tell a checkpoint's files apart.
"""

from __future__ import annotations

import re
from pathlib import Path

LEVELDB_MAGIC = bytes.fromhex("57fb808b247547db")
"""The last 8 bytes of every LevelDB table, such as a checkpoint's `.index` (little-endian
0xdb4775248b80fb57)."""
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
"""The first bytes of an HDF5 file (Keras `.weights.h5`, legacy `.h5`)."""
ZIP_MAGIC = b"PK\x03\x04"
"""The first bytes of a zip archive (a `.keras` model)."""
DATA_SHARD = re.compile(r"^(?P<prefix>.+)\.data-\d{5}-of-\d{5}$")
"""A checkpoint's data file: `PREFIX.data-00000-of-00001`."""
CHECKPOINT_FILE = re.compile(r"\.(index|meta|data-\d{5}-of-\d{5})$")
"""Any file of a Saver checkpoint, by the suffix it adds to the prefix."""


def head(path: Path, size: int = 16) -> bytes:
    """The first `size` bytes of a file."""
    with path.open("rb") as file:
        return file.read(size)


def tail(path: Path, size: int = 8) -> bytes:
    """The last `size` bytes of a file (all of it when shorter)."""
    with path.open("rb") as file:
        file.seek(0, 2)
        file.seek(max(0, file.tell() - size))
        return file.read(size)


def is_leveldb_table(path: Path) -> bool:
    """True when the file ends like a LevelDB table (a checkpoint index)."""
    return path.stat().st_size >= 48 and tail(path) == LEVELDB_MAGIC
