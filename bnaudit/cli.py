"""The command line: parse options, call the core, render the report, exit with its code."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from bnaudit import __version__
from bnaudit.errors import BnauditError, ExitCode
from bnaudit.report import FAIL_ON, Tolerances

# TensorFlow is imported only where a graph must run; keep its C++ logging off the terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# bnaudit does no heavy linear algebra: one BLAS thread saves a pool start-up on every run.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

_FILE_WIDTH = 140


def _path_argument(name: str) -> Callable[[Any], Any]:
    return click.argument(name, type=click.Path(path_type=Path))


def _report_options(function: Callable[..., Any]) -> Callable[..., Any]:
    from bnaudit.render import REPORTERS

    options = [
        click.option(
            "--format",
            "format_name",
            type=click.Choice(sorted(REPORTERS)),
            default="table",
            show_default=True,
            help="How to render the report on stdout (or in --output).",
        ),
        click.option(
            "--output",
            "-o",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Write the report to this file instead of stdout.",
        ),
        click.option(
            "--fail-on",
            type=click.Choice(list(FAIL_ON)),
            default="error",
            show_default=True,
            help="Exit 1 when a finding reaches this severity.",
        ),
        click.option("--debug", is_flag=True, help="Show the traceback of any failure."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bnaudit")
def main() -> None:
    """Audit batch normalization in frozen TensorFlow graphs."""


@main.command("list-bn")
@_path_argument("graph")
@_report_options
def list_bn_command(
    graph: Path, format_name: str, output: Path | None, fail_on: str, debug: bool
) -> None:
    """List every batch-normalization layer of the frozen GRAPH (.pb or .pbtxt).

    Shows each layer's mode, epsilon, channels, where its parameters come from and the
    health of its statistics. Exit codes: 0 passed, 1 findings at or above --fail-on,
    2 usage error, 3 an input could not be read.
    """
    from bnaudit.listing import list_bn
    from bnaudit.render import summary_line

    with _user_errors(debug):
        _refuse_overwrite(output, [graph])
        report = list_bn(graph, FAIL_ON[fail_on])
        _emit(report, format_name, output)
        click.echo(summary_line(report), err=True)
    sys.exit(ExitCode.PASSED if report.passed else ExitCode.FINDINGS)


@main.command("compare")
@_path_argument("checkpoint")
@_path_argument("graph")
@click.option(
    "--no-run",
    is_flag=True,
    help="Static audit only: compare values, never execute a graph.",
)
@click.option(
    "--stat-atol",
    type=click.FloatRange(min=0),
    default=Tolerances.stat_atol,
    show_default=True,
    help="Absolute tolerance for frozen constants against the checkpoint.",
)
@click.option(
    "--stat-rtol",
    type=click.FloatRange(min=0),
    default=Tolerances.stat_rtol,
    show_default=True,
    help="Relative tolerance for frozen constants against the checkpoint.",
)
@click.option(
    "--map",
    "maps",
    multiple=True,
    metavar="OLD=NEW",
    help="Rewrite graph names before pairing them with checkpoint names (repeatable).",
)
@_report_options
def compare_command(
    checkpoint: Path,
    graph: Path,
    no_run: bool,
    stat_atol: float,
    stat_rtol: float,
    maps: tuple[str, ...],
    format_name: str,
    output: Path | None,
    fail_on: str,
    debug: bool,
) -> None:
    """Compare the BN layers of the frozen GRAPH with the CHECKPOINT they came from.

    CHECKPOINT is a Saver prefix, a directory with a `checkpoint` file, a TF2 object
    checkpoint, a SavedModel directory, a .weights.h5 or a .keras file. Each graph layer is
    paired with the checkpoint's variables, its frozen constants compared, and the likely
    cause of every difference named. Exit codes: 0 passed, 1 findings at or above
    --fail-on, 2 usage error, 3 an input could not be read.
    """
    from bnaudit.compare import compare
    from bnaudit.match import parse_maps
    from bnaudit.render import summary_line

    try:
        rules = parse_maps(maps)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--map") from error
    if not no_run:
        click.echo(
            "bnaudit: note: running both graphs is not available yet; doing the static audit "
            "(--no-run)",
            err=True,
        )
    with _user_errors(debug):
        _refuse_overwrite(output, [checkpoint, graph])
        tolerances = Tolerances(stat_atol=stat_atol, stat_rtol=stat_rtol)
        report = compare(checkpoint, graph, tolerances, rules, FAIL_ON[fail_on])
        for note in report.notes:
            click.echo(f"bnaudit: note: {note}", err=True)
        _emit(report, format_name, output)
        click.echo(summary_line(report), err=True)
    sys.exit(ExitCode.PASSED if report.passed else ExitCode.FINDINGS)


def _refuse_overwrite(output: Path | None, inputs: list[Path]) -> None:
    if output is None:
        return
    for path in inputs:
        if path.exists() and output.exists() and output.resolve() == path.resolve():
            raise click.UsageError(
                f"--output {output} is an input; bnaudit never writes to its inputs"
            )


def _emit(report: Any, format_name: str, output: Path | None) -> None:
    """Render `report` with the chosen reporter to stdout or to `output`."""
    from bnaudit.render import REPORTERS

    rendered = REPORTERS[format_name](report)
    if not isinstance(rendered, str):
        from rich.console import Console
    if output is None:
        if isinstance(rendered, str):
            click.echo(rendered, nl=False)
        else:
            Console(highlight=False).print(rendered)
        return
    if not isinstance(rendered, str):
        buffer = io.StringIO()
        Console(file=buffer, width=_FILE_WIDTH, highlight=False).print(rendered)
        rendered = buffer.getvalue()
    try:
        output.write_text(rendered, encoding="utf-8")
    except OSError as error:
        raise BnauditError(f"cannot write the report to {output}: {error.strerror}") from error


@contextmanager
def _user_errors(debug: bool) -> Iterator[None]:
    """Turn failures into one line on stderr and the documented exit code."""
    try:
        yield
    except click.UsageError:
        raise
    except BnauditError as error:
        if debug:
            raise
        click.echo(f"bnaudit: error: {error}", err=True)
        sys.exit(error.exit_code)
    except Exception as error:  # a bug, or an input nobody anticipated
        if debug:
            raise
        click.echo(
            f"bnaudit: error: could not process the input ({type(error).__name__}: {error}); "
            "rerun with --debug for the traceback and report it",
            err=True,
        )
        sys.exit(ExitCode.INPUT)
