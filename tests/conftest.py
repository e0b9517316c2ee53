"""Shared test helpers: the fixture folders and a CLI runner with separate streams."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

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
