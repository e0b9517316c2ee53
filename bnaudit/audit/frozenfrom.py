"""Which checkpoint a graph was frozen from, when it is not the one given.

When the frozen constants differ from the checkpoint, the graph was most often frozen from
another step of the same training: the checkpoints beside the given one are tried in turn,
and those under `--search DIR`. A candidate that is damaged or of another model is skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bnaudit.checkpoint.siblings import beside, search


def frozen_from(
    given: Path, directory: Path | None, matches: Callable[[Path], bool]
) -> tuple[list[Path], list[Path]]:
    """The candidates `matches` accepts, and every candidate tried (for the files read)."""
    candidates = beside(given)
    if directory is not None:
        candidates += [c for c in search(directory, given) if c not in candidates]
    found: list[Path] = []
    tried: list[Path] = []
    for candidate in candidates:
        tried.append(candidate)
        try:
            if matches(candidate):
                found.append(candidate)
        except Exception:  # damaged or hostile, maybe beyond what the readers check:
            continue  # not the one, and a file the user did not pass never costs the audit
    return found, tried
