"""TensorFlow's run in a child the parent can stop: results, errors, deaths and deadlines."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bnaudit.errors import BnauditError
from bnaudit.run.isolate import run_isolated

Step = Callable[[str], None]


def test_the_result_and_the_progress_lines_come_back() -> None:
    lines: list[str] = []

    def work(step: Step) -> dict[str, int]:
        step("one")
        step("two")
        return {"pid": os.getpid()}

    result = run_isolated(work, lines.append, 30, "a test", fork=True)
    assert lines == ["one", "two"]
    assert result["pid"] != os.getpid()  # it ran elsewhere


def test_in_a_process_that_imported_tensorflow_the_work_runs_here(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", object())
    assert run_isolated(lambda step: os.getpid(), lambda text: None, 30, "a test") == os.getpid()


def test_a_bnaudit_error_in_the_child_is_raised_here() -> None:
    def work(step: Step) -> None:
        raise BnauditError("the child's one line")

    with pytest.raises(BnauditError, match=r"^the child's one line$"):
        run_isolated(work, lambda text: None, 30, "a test", fork=True)


def test_a_child_killed_by_a_signal_is_one_line() -> None:
    def work(step: Step) -> None:
        os.kill(os.getpid(), signal.SIGKILL)  # what the out-of-memory killer sends

    with pytest.raises(BnauditError, match=r"TensorFlow was killed by SIGKILL .* running a test"):
        run_isolated(work, lambda text: None, 30, "a test", fork=True)


def test_a_child_past_the_deadline_is_killed() -> None:
    def work(step: Step) -> None:
        time.sleep(60)

    started = time.monotonic()
    with pytest.raises(BnauditError, match=r"took longer than --timeout 0\.5 s"):
        run_isolated(work, lambda text: None, 0.5, "a test", fork=True)
    assert time.monotonic() - started < 10


@pytest.mark.slow
def test_a_tensorflow_loop_that_never_ends_is_stopped(tmp_path: Path) -> None:
    """What TensorFlow's own session timeouts do not stop: a While whose condition is True.

    Run through the command line in a fresh process, as users run it: the parent process has
    not imported TensorFlow, so the run can happen in a child it stops."""
    graph = tmp_path / "loop.pb"
    script = (
        "import sys, tensorflow as tf\n"
        "g = tf.Graph()\n"
        "with g.as_default():\n"
        "    x = tf.compat.v1.placeholder(tf.float32, [2, 4], name='x')\n"
        "    (v,) = tf.while_loop(lambda v: tf.constant(True), lambda v: v + 1.0, [x])\n"
        "    tf.identity(v, name='out')\n"
        "open(sys.argv[1], 'wb').write(g.as_graph_def().SerializeToString())\n"
    )
    subprocess.run([sys.executable, "-c", script, str(graph)], check=True, capture_output=True)
    isolate = "from bnaudit.run.isolate import run_isolated\n"
    runner = (
        isolate + "from pathlib import Path\n"
        "import numpy as np\n"
        "from bnaudit.model import load_model\n"
        "from bnaudit.run.execute import run_pair\n"
        "from bnaudit.run.sides import Side\n"
        "graph = load_model(Path(__import__('sys').argv[1]))\n"
        "side = Side(graph.graph_def, {'x': np.zeros((2, 4), np.float32)}, 'frozen graph')\n"
        "work = lambda step: run_pair(side, side, ['out:0'], lambda n, a, b: 0.0, step)\n"
        "run_isolated(work, lambda text: None, 15, 'a looping graph')\n"
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", runner, str(graph)], capture_output=True, text=True, timeout=120
    )
    assert "took longer than --timeout 15 s" in done.stderr
    assert time.monotonic() - started < 60


def test_the_timeout_counts_from_the_end_of_prepare() -> None:
    """Importing TensorFlow takes seconds; `--timeout` bounds the run, not the import."""

    def prepare() -> None:
        time.sleep(1.5)

    result = run_isolated(lambda step: "ran", lambda text: None, 1, "a test", True, prepare)
    assert result == "ran"
