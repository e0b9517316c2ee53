"""Shared test helpers: the fixture folders and a CLI runner with separate streams."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bnaudit.run.execute import import_tensorflow

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def pytest_configure(config: pytest.Config) -> None:
    """Import TensorFlow once, before any test runs a graph.

    The command line runs TensorFlow in a forked child it can stop (`bnaudit.run.isolate`);
    a process that has imported TensorFlow runs it in place instead, because TensorFlow
    does not survive a fork. Importing it here makes every in-process run take that path
    once, instead of each forked run importing TensorFlow again (3 s each). The fork itself
    is tested in tests/run/test_isolate.py and, through fresh processes, by the hostile-input
    and command-line tests.
    """
    import_tensorflow()


ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "fixtures" / "models"


def fixture_dirs() -> list[Path]:
    """Every committed fixture folder that states its verdict."""
    return sorted(p.parent for p in MODELS.glob("*/expected.json"))


def expected(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "expected.json").read_text())


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()
