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
from bnaudit.audit.options import Tolerances
from bnaudit.errors import BnauditError, ExitCode, UsageError
from bnaudit.files import shown
from bnaudit.findings import FAIL_ON
from bnaudit.vocab import REFERENCE_CHOICES

# TensorFlow is imported only where a graph must run; keep its C++ logging off the terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# bnaudit does no heavy linear algebra: one BLAS thread saves a pool start-up on every run.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

_FILE_WIDTH = 140


def _path_argument(name: str) -> Callable[[Any], Any]:
    return click.argument(name, type=click.Path(path_type=Path))


def _apply(options: list[Callable[[Any], Any]], function: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate `function` with `options`, the first listed first in --help."""
    for option in reversed(options):
        function = option(function)
    return function


def _report_options(function: Callable[..., Any]) -> Callable[..., Any]:
    from bnaudit.report import REPORTERS

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
    return _apply(options, function)


def _run_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """Options of the run that `compare` does unless --no-run."""
    options = [
        click.option(
            "--atol",
            type=click.FloatRange(min=0),
            default=1e-5,
            show_default=True,
            help="Activations diverge when max abs diff exceeds this AND --rtol is exceeded.",
        ),
        click.option(
            "--rtol",
            type=click.FloatRange(min=0),
            default=1e-5,
            show_default=True,
            help="Relative tolerance for activations.",
        ),
        click.option("--seed", type=int, default=0, show_default=True, help="Random input seed."),
        click.option(
            "--batch",
            type=click.IntRange(min=1),
            default=2,
            show_default=True,
            help="Unknown first dimension of random inputs (2+ shows training-mode BN).",
        ),
    ]
    return _apply(options, function)


def _input_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """Options saying what the run feeds both graphs."""
    options = [
        click.option(
            "--shape",
            "shapes",
            multiple=True,
            metavar="NAME=D0,D1,...",
            help="Shape of an input's random data, e.g. input=1,224,224,3 (repeatable).",
        ),
        click.option(
            "--input",
            "input_files",
            multiple=True,
            metavar="NAME=FILE.npy",
            help="Feed an input from a .npy file (repeatable).",
        ),
        click.option(
            "--inputs",
            "inputs_file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Feed inputs from an .npz file (keys: placeholder names).",
        ),
        click.option(
            "--save-inputs",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Write the fed inputs to this .npz file (replay with --inputs).",
        ),
        click.option(
            "--feed",
            "feeds",
            multiple=True,
            metavar="NAME=VALUE",
            help="Feed a scalar to the frozen graph, e.g. a flag: is_training=true (repeatable).",
        ),
    ]
    return _apply(options, function)


def _reference_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """Options saying what the frozen graph is run against, and what may run."""
    options = [
        click.option(
            "--reference",
            type=click.Choice(REFERENCE_CHOICES),
            default="auto",
            show_default=True,
            help=(
                "The checkpoint's side of the run; auto: the .meta beside a TF1 checkpoint, "
                "the .keras model, else the frozen graph patched with the checkpoint."
            ),
        ),
        click.option(
            "--allow-unsafe-ops",
            is_flag=True,
            help="Run graphs holding ops that touch files, processes or the network.",
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(min=1),
            default=300.0,
            show_default=True,
            help="Seconds one run of a graph may take before it is stopped (exit 3).",
        ),
        click.option("--quiet", "-q", is_flag=True, help="No progress lines on stderr."),
    ]
    return _apply(options, function)


class _OneLineErrors(click.Group):
    """click's group, with its usage errors said in one line, like every other error."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.exceptions.NoArgsIsHelpError as error:
            error.show()  # no command: the help itself, as click says it
            sys.exit(error.exit_code)
        except click.UsageError as error:
            where = error.ctx.command_path if error.ctx is not None else "bnaudit"
            click.echo(
                f"bnaudit: error: {shown(error.format_message())} (see '{where} --help')",
                err=True,
            )
            sys.exit(ExitCode.USAGE)
        except click.ClickException as error:
            click.echo(f"bnaudit: error: {shown(error.format_message())}", err=True)
            sys.exit(error.exit_code)
        except click.Abort:
            click.echo("bnaudit: aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
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
    from bnaudit.api import ListOptions, list_bn
    from bnaudit.outputs import refuse_overwrite
    from bnaudit.report.cells import summary_line

    with _user_errors(debug):
        refuse_overwrite("--output", output, [graph])
        report = list_bn(graph, ListOptions(fail_on=FAIL_ON[fail_on]))
        _emit(report, format_name, output)
        click.echo(shown(summary_line(report)), err=True)
    sys.exit(ExitCode.PASSED if report.passed else ExitCode.FINDINGS)


@main.command("compare")
@_path_argument("checkpoint")
@_path_argument("graph")
@click.option("--no-run", is_flag=True, help="Static audit only: compare values, run nothing.")
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
@click.option(
    "--search",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="When constants differ, also look under DIR for the checkpoint they match.",
)
@_run_options
@_input_options
@_reference_options
@_report_options
def compare_command(
    checkpoint: Path,
    graph: Path,
    no_run: bool,
    stat_atol: float,
    stat_rtol: float,
    maps: tuple[str, ...],
    search: Path | None,
    format_name: str,
    output: Path | None,
    fail_on: str,
    debug: bool,
    **run: Any,
) -> None:
    """Compare the BN layers of the frozen GRAPH with the CHECKPOINT they came from.

    CHECKPOINT is a Saver prefix, a directory with a `checkpoint` file, a TF2 object
    checkpoint, a SavedModel directory, a .weights.h5 or a .keras file. Each graph layer is
    paired with the checkpoint's variables, its frozen constants compared, and the likely
    cause of every difference named. Then, unless --no-run, the same inputs go through the
    frozen graph and the checkpoint's reference (its TF1 .meta, its .keras model, or the
    frozen graph with its BN values, in inference mode); the first BN layer that changes
    the result is named. Exit codes: 0 passed, 1 findings at or above --fail-on, 2 usage
    error, 3 an input could not be read or run.
    """
    from bnaudit.api import CompareOptions, compare
    from bnaudit.audit.match import parse_maps
    from bnaudit.outputs import refuse_overwrite
    from bnaudit.report.cells import summary_line

    try:
        rules = tuple(parse_maps(maps))
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--map") from error
    tolerances = Tolerances(stat_atol=stat_atol, stat_rtol=stat_rtol)
    options = CompareOptions(tolerances, rules, FAIL_ON[fail_on], search)
    with _user_errors(debug):
        run_options = None if no_run else _parse_run_options(run)
        inputs = [checkpoint, graph, *_input_files(run)]
        refuse_overwrite("--output", output, inputs)
        refuse_overwrite("--save-inputs", run["save_inputs"], inputs)
        writes = [("--output", output)]
        report = compare(checkpoint, graph, options, run_options, _Progress(run["quiet"]), writes)
        for note in report.notes:
            click.echo(f"bnaudit: note: {shown(note)}", err=True)
        _emit(report, format_name, output)
        click.echo(shown(summary_line(report)), err=True)
    sys.exit(ExitCode.PASSED if report.passed else ExitCode.FINDINGS)


class _Progress:
    """Progress lines on stderr (unless --quiet); warnings always."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def step(self, text: str) -> None:
        if not self.quiet:
            click.echo(f"bnaudit: {shown(text)}", err=True)

    def warn(self, text: str) -> None:
        click.echo(f"bnaudit: warning: {shown(text)}", err=True)


def _input_files(run: dict[str, Any]) -> list[Path]:
    """The array files --input and --inputs read."""
    files = [Path(text.partition("=")[2]) for text in run["input_files"]]
    return files + ([Path(run["inputs_file"])] if run["inputs_file"] else [])


def _parse_run_options(run: dict[str, Any]) -> Any:
    """The run's options as a RunOptions, or a click usage error."""
    from bnaudit.api import InputOptions, RunOptions
    from bnaudit.run.inputs import load_arrays, parse_assignment, parse_shape

    try:
        shapes = dict(parse_shape(text) for text in run["shapes"])
        singles = [parse_assignment(text, "--input") for text in run["input_files"]]
        feeds = dict(parse_assignment(text, "--feed") for text in run["feeds"])
    except ValueError as error:
        raise click.UsageError(str(error)) from error
    arrays = load_arrays([(n, Path(p)) for n, p in singles], run["inputs_file"])
    return RunOptions(
        atol=run["atol"],
        rtol=run["rtol"],
        inputs=InputOptions(
            batch=run["batch"], seed=run["seed"], shapes=shapes, arrays=arrays, feeds=feeds
        ),
        reference=run["reference"],
        allow_unsafe_ops=run["allow_unsafe_ops"],
        save_inputs=run["save_inputs"],
        timeout=run["timeout"],
    )


def _emit(report: Any, format_name: str, output: Path | None) -> None:
    """Render `report` with the chosen reporter to stdout or to `output`."""
    from bnaudit.report import REPORTERS

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
        output.write_text(rendered, encoding="utf-8", errors="backslashreplace")
    except OSError as error:
        raise BnauditError(f"cannot write the report to {output}: {error.strerror}") from error


@contextmanager
def _user_errors(debug: bool) -> Iterator[None]:
    """Turn failures into one line on stderr and the documented exit code."""
    try:
        yield
    except click.UsageError:
        raise
    except UsageError as error:
        raise click.UsageError(shown(str(error))) from None
    except BnauditError as error:
        if debug:
            raise
        click.echo(f"bnaudit: error: {shown(str(error))}", err=True)
        sys.exit(error.exit_code)
    except Exception as error:  # a bug, or an input nobody anticipated
        if debug:
            raise
        click.echo(
            f"bnaudit: error: could not process the input ({type(error).__name__}: "
            f"{shown(str(error))}); "
            "rerun with --debug for the traceback and report it",
            err=True,
        )
        sys.exit(ExitCode.INPUT)
