"""Reports: result dataclasses (`results`), the JSON contract (`contract`) and the renderers.

A renderer is a pure function of a report; `REPORTERS` maps each `--format` name to one. The
rich table (`table`) is imported only when asked for: rich costs import time the text formats
skip.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bnaudit.report.cells import Report
from bnaudit.report.text import render_json, render_junit, render_markdown


def _render_table(report: Report) -> Any:
    from bnaudit.report.table import render_table  # rich costs import time the text formats skip

    return render_table(report)


# Name -> renderer; also feeds click.Choice. A renderer returns text or a rich renderable.
REPORTERS: dict[str, Callable[[Any], Any]] = {
    "table": _render_table,
    "json": render_json,
    "markdown": render_markdown,
    "junit": render_junit,
}
