"""Which checkpoint a graph was frozen from, when it is not the one given.

When the frozen constants differ from the checkpoint, the graph was most often frozen from
another step of the same training: the checkpoints beside the given one are tried in turn,
and those under `--search DIR`. A candidate that is damaged or of another model is skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bnaudit.checkpoint.siblings import beside, search
from bnaudit.errors import BnauditError


@dataclass(frozen=True)
class Search:
    """What looking for the checkpoint the graph was frozen from found."""

    found: tuple[Path, ...]
    """The candidates every layer matches."""
    tried: tuple[Path, ...]
    """Every candidate opened (for the files read)."""
    unreadable: tuple[tuple[Path, str], ...]
    """Candidates that could not be read, and why: the one frozen may be among them."""


def frozen_from(given: Path, directory: Path | None, matches: Callable[[Path], bool]) -> Search:
    """The candidates `matches` accepts, every candidate tried, and those it could not read."""
    candidates = beside(given)
    if directory is not None:
        candidates += [c for c in search(directory, given) if c not in candidates]
    found: list[Path] = []
    unreadable: list[tuple[Path, str]] = []
    for candidate in candidates:
        try:
            if matches(candidate):
                found.append(candidate)
        except BnauditError as error:
            unreadable.append((candidate, str(error)))
        except Exception as error:  # damaged or hostile beyond what the readers check
            unreadable.append((candidate, f"{type(error).__name__}"))
    return Search(tuple(found), tuple(candidates), tuple(unreadable))
