"""The command line contract: streams, exit codes, --output, --fail-on, no TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from conftest import MODELS

from bnaudit import __version__
from bnaudit.cli import main

GOOD = MODELS / "tf1_fused_cond" / "frozen.pb"
UNTRAINED = MODELS / "tf1_untrained" / "frozen.pb"
BARE_FLAG = MODELS / "tf1_bare_flag" / "frozen.pb"


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.stdout


def test_table_on_stdout_summary_on_stderr(runner: CliRunner) -> None:
    result = runner.invoke(main, ["list-bn", str(GOOD)])
    assert result.exit_code == 0
    assert "model/bn1" in result.stdout and "conditional" in result.stdout
    assert "passed" in result.stderr and "model/bn1" not in result.stderr


def test_findings_fail_with_exit_1(runner: CliRunner) -> None:
    result = runner.invoke(main, ["list-bn", str(UNTRAINED)])
    assert result.exit_code == 1
    assert "untrained-stats" in result.stdout
    assert "failed" in result.stderr


def test_fail_on_threshold(runner: CliRunner) -> None:
    assert runner.invoke(main, ["list-bn", str(UNTRAINED), "--fail-on", "never"]).exit_code == 0
    assert runner.invoke(main, ["list-bn", str(BARE_FLAG)]).exit_code == 0
    assert runner.invoke(main, ["list-bn", str(BARE_FLAG), "--fail-on", "warning"]).exit_code == 1


def test_output_file_gets_the_report(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = runner.invoke(main, ["list-bn", str(GOOD), "--format", "json", "-o", str(out)])
    assert result.exit_code == 0
    assert result.stdout == ""
    assert json.loads(out.read_text())["layers"][0]["scope"] == "model/bn1"


def test_output_never_overwrites_an_input(runner: CliRunner, tmp_path: Path) -> None:
    graph = tmp_path / "frozen.pb"
    graph.write_bytes(GOOD.read_bytes())
    result = runner.invoke(main, ["list-bn", str(graph), "-o", str(graph)])
    assert result.exit_code == 2
    assert graph.read_bytes() == GOOD.read_bytes()


def test_markdown_format(runner: CliRunner) -> None:
    result = runner.invoke(main, ["list-bn", str(UNTRAINED), "--format", "markdown"])
    assert result.stdout.startswith("## bnaudit list-bn")
    assert "`untrained-stats`" in result.stdout


def test_usage_error_is_exit_2(runner: CliRunner) -> None:
    result = runner.invoke(main, ["list-bn", str(GOOD), "--format", "xml"])
    assert result.exit_code == 2


def test_bad_input_is_one_line_exit_3(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["list-bn", str(tmp_path / "missing.pb")])
    assert result.exit_code == 3
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "no such file" in result.stderr


def _modules_after(code: str) -> set[str]:
    script = f"import sys\n{code}\nprint(','.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    return set(done.stdout.strip().splitlines()[-1].split(","))


def test_help_list_bn_and_static_compare_never_import_tensorflow() -> None:
    code = (
        "from click.testing import CliRunner\n"
        "from bnaudit.cli import main\n"
        "r = CliRunner()\n"
        "assert r.invoke(main, ['--help']).exit_code == 0\n"
        f"assert r.invoke(main, ['list-bn', {str(GOOD)!r}, '--format', 'json']).exit_code == 0\n"
        f"assert r.invoke(main, ['list-bn', {str(GOOD)!r}]).exit_code == 0\n"
        f"assert r.invoke(main, ['compare', {str(GOOD.parent / 'ckpt')!r}, {str(GOOD)!r},"
        " '--no-run']).exit_code == 0\n"
    )
    modules = _modules_after(code)
    assert (
        "bnaudit.audit.detect" in modules and "bnaudit.audit.compare" in modules
    )  # the commands ran
    assert "tensorflow" not in modules


def test_python_dash_m(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bnaudit", "list-bn", str(GOOD), "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0
    assert json.loads(done.stdout)["command"] == "list-bn"


def test_text_formats_do_not_load_rich() -> None:
    code = (
        "from click.testing import CliRunner\n"
        "from bnaudit.cli import main\n"
        f"args = ['list-bn', {str(GOOD)!r}, '--format', 'json']\n"
        "assert CliRunner().invoke(main, args).exit_code == 0\n"
    )
    modules = _modules_after(code)
    assert "bnaudit.audit.listing" in modules
    assert "rich.table" not in modules


def test_unfrozen_training_graph_is_flagged(runner: CliRunner, tmp_path: Path) -> None:
    """The training graph TensorFlow wrote into the .meta, passed as if it were frozen."""
    from bnaudit.formats import protos

    meta = protos.MetaGraphDef.FromString(
        (GOOD.parent / "ckpt" / "model.ckpt-20.meta").read_bytes()
    )
    unfrozen = tmp_path / "train_graph.pb"
    unfrozen.write_bytes(meta.graph_def.SerializeToString())
    result = runner.invoke(main, ["list-bn", str(unfrozen), "--format", "json"])
    assert result.exit_code == 0  # a warning, below the default threshold
    layers = json.loads(result.stdout)["layers"]
    assert [layer["scope"] for layer in layers] == ["model/bn1", "model/bn2"]
    assert layers[0]["params"]["moving_mean"]["source"] == "model/bn1/moving_mean"
    assert {f["code"] for layer in layers for f in layer["findings"]} == {"not-frozen"}
