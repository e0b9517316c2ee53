"""Other checkpoints a graph may have been frozen from: beside the one given, or under a
directory the user names (`--search`).

Training keeps several steps in one directory (`model.ckpt-10`, `model.ckpt-20`, ...), and the
commonest slip is freezing one step and shipping another. Listing is bounded: a directory
holding thousands of files costs a bounded walk, never a full one.
"""

from __future__ import annotations

import os
from pathlib import Path

from bnaudit.formats.signatures import DATA_SHARD

MAX_CANDIDATES = 64
"""Checkpoints tried at most (beside the one given, or found by a search)."""
MAX_ENTRIES = 4096
"""Directory entries looked at at most, over a whole search."""
MAX_DEPTH = 4
"""How deep `--search` descends below the directory given."""
_KERAS_SUFFIXES = (".weights.h5", ".keras", ".h5")


def beside(checkpoint: Path) -> list[Path]:
    """Checkpoints of the same kind in the same directory as `checkpoint` (resolved)."""
    kinds = {_kind(checkpoint)}
    return [c for c in _listed(checkpoint.parent, kinds, [MAX_ENTRIES]) if c != checkpoint]


def search(directory: Path, exclude: Path) -> list[Path]:
    """Checkpoints of any kind under `directory`, shallowest first, `exclude` left out."""
    found: list[Path] = []
    budget = [MAX_ENTRIES]
    level = [directory]
    for _ in range(MAX_DEPTH + 1):
        below: list[Path] = []
        for folder in level:
            found += [c for c in _listed(folder, _ALL_KINDS, budget) if c != exclude]
            below += _subdirectories(folder, budget)
        level = below
        if len(found) >= MAX_CANDIDATES or not level:
            break
    return found[:MAX_CANDIDATES]


def _kind(checkpoint: Path) -> str:
    """The Keras suffix of a Keras file; `bundle` for a tensor bundle prefix."""
    return next((s for s in _KERAS_SUFFIXES if checkpoint.name.endswith(s)), "bundle")


_ALL_KINDS = frozenset({"bundle", *_KERAS_SUFFIXES})


def _entries(folder: Path, budget: list[int]) -> list[os.DirEntry[str]]:
    entries: list[os.DirEntry[str]] = []
    try:
        with os.scandir(folder) as listing:
            for entry in listing:
                if budget[0] <= 0:
                    break
                budget[0] -= 1
                entries.append(entry)
    except OSError:
        return []
    return sorted(entries, key=lambda e: e.name)


def _listed(folder: Path, kinds: set[str] | frozenset[str], budget: list[int]) -> list[Path]:
    """Bundle prefixes (by their `.index` and first shard) and Keras files in `folder`, of
    the kinds asked for."""
    found = []
    for entry in _entries(folder, budget):
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
        except OSError:
            continue
        path = folder / entry.name
        if entry.name.endswith(".index"):
            prefix = folder / entry.name[: -len(".index")]
            if "bundle" in kinds and _shards(folder, prefix):
                found.append(prefix)
        elif _kind(path) != "bundle" and _kind(path) in kinds:
            found.append(path)
        if len(found) >= MAX_CANDIDATES:
            break
    return found


def _shards(folder: Path, prefix: Path) -> list[Path]:
    first = folder / f"{prefix.name}.data-00000-of-00001"
    if first.exists():
        return [first]
    return [p for p in folder.glob(f"{prefix.name}.data-*") if DATA_SHARD.search(p.name)][:1]


def _subdirectories(folder: Path, budget: list[int]) -> list[Path]:
    found = []
    for entry in _entries(folder, budget):
        try:
            if entry.is_dir(follow_symlinks=False):
                found.append(Path(entry.path))
        except OSError:
            continue
    return found
