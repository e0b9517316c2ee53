"""The finding catalog: the README's findings table says what `bnaudit/findings.py` does."""

from __future__ import annotations

import re
from typing import get_args

from conftest import ROOT

from bnaudit.findings import CATALOG, Code, Severity, finding, passes


def _readme_findings() -> dict[str, list[str]]:
    """Code -> [severity, meaning, fix] from the README's findings table."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Findings") : text.index("### Reports")]
    rows = {}
    for line in section.splitlines():
        match = re.fullmatch(r"\| `([a-z-]+)` \| (.*) \|", line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in match.group(2).split(" | ")]
    return rows


def test_readme_table_is_the_catalog() -> None:
    rows = _readme_findings()
    assert list(rows) == list(CATALOG), "same codes, in the same order"
    for code, (severity, meaning, fix) in rows.items():
        kind = CATALOG[code]  # type: ignore[index]
        assert severity == kind.severity.label, code
        assert meaning == kind.meaning, code
        # The README sets code in backticks for reading; messages carry the plain text.
        assert fix.replace("`", "") == (kind.fix or "-"), code


def test_every_code_is_in_the_catalog() -> None:
    assert set(CATALOG) == set(get_args(Code))
    assert all(kind.code == code for code, kind in CATALOG.items())


def test_finding_takes_severity_and_fix_from_the_catalog() -> None:
    made = finding("stats-mismatch", "frozen values differ", "bn1")
    assert made.severity is Severity.ERROR and made.layer == "bn1"
    assert made.message == f"frozen values differ; {CATALOG['stats-mismatch'].fix}"
    assert finding("folded", "verified").message == "verified"  # info: nothing to fix
    assert finding("training-mode", "x", fix="do y").message == "x; do y"


def test_threshold() -> None:
    warning = finding("conditional-mode", "no default")
    assert passes([warning], Severity.ERROR) and not passes([warning], Severity.WARNING)
    assert passes([finding("untrained-stats", "0 and 1")], None)
