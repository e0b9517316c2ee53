"""Speed benchmark: `bnaudit list-bn` on a ResNet-50-sized frozen graph, against TensorFlow.

    python benchmarks/bench.py [--workdir DIR] [--repeat 5] [--batch 32] [--no-run] [--json FILE]

Each contender runs in a fresh Python process, so imports count as a user sees them:
- `list-bn`: `python -m bnaudit list-bn GRAPH --format json` (stdout to /dev/null);
- `tf-parse`: a script that imports TensorFlow and parses GRAPH into `tf.compat.v1.GraphDef`;
- `bytes-only`: the floor for any tool that must read the graph: a process that imports
  protobuf and bnaudit's own message classes (`bnaudit.formats.protos`), reads GRAPH and parses it
  into `bnaudit.formats.protos.GraphDef`, nothing else.
Targets (issue 2): list-bn at least 10x faster than tf-parse, at most 2x bytes-only. Once
`bnaudit compare` exists, `compare --no-run` is measured too against a script that imports
TensorFlow, reads the BN variables with `tf.train.load_checkpoint` and parses the graph
(issue 3: at least 10x faster). `compare` with its run (issue 4) is measured, unless
`--no-run`, against a bare TensorFlow script (`tf-run`) that imports both graphs and runs each
once at `--batch`, fetching the same tensors: at most 1.5x its time. The baseline's reference
graph, inputs and fetch list are written by bnaudit beforehand (`make_run_baseline.py`), so it
times TensorFlow only. The contenders run interleaved, rotating their order each round, after
one untimed warm-up run each (which also loads the files into the page cache); the median of
`--repeat` rounds is compared. Exit code 0 when every target is met, 1 if not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from make_resnet50 import BN_LAYERS, CHECKPOINT_PREFIX, GRAPH_NAME
from make_run_baseline import FETCHES_NAME, REFERENCE_NAME, inputs_name

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

TF_PARSE = """\
import sys
import tensorflow as tf
g = tf.compat.v1.GraphDef()
g.ParseFromString(open(sys.argv[1], "rb").read())
"""
BYTES_ONLY = """\
import sys
from bnaudit.formats.protos import GraphDef
g = GraphDef()
g.ParseFromString(open(sys.argv[1], "rb").read())
"""
TF_COMPARE = """\
import re, sys
import tensorflow as tf
reader = tf.train.load_checkpoint(sys.argv[1])
bn = re.compile(r"/(gamma|beta|moving_mean|moving_variance)/")
values = {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if bn.search(k)}
g = tf.compat.v1.GraphDef()
g.ParseFromString(open(sys.argv[2], "rb").read())
"""
TF_RUN = """\
import json, sys
import numpy as np
import tensorflow as tf
frozen, reference, inputs, fetches = sys.argv[1:]
feeds = {f"{k}:0": v for k, v in np.load(inputs).items()}
names = json.load(open(fetches))
outputs = []
for path in (frozen, reference):
    graph = tf.Graph()
    with graph.as_default():
        graph_def = tf.compat.v1.GraphDef.FromString(open(path, "rb").read())
        tf.graph_util.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as session:
        outputs.append(session.run(names, feeds))
print(sum(array.nbytes for run in outputs for array in run))
"""


@dataclass(frozen=True)
class Contender:
    """One command whose wall time is measured."""

    name: str
    """Short key used in the table and the JSON."""
    argv: list[str]
    """The command line, run in a fresh process."""
    ok_codes: frozenset[int] = frozenset({0})
    """Exit codes that count as a successful run."""


@dataclass(frozen=True)
class Run:
    """One timed run of a contender."""

    seconds: float
    """Wall time from spawning the process to reaping it."""
    peak_rss_mb: float
    """The process's peak resident set size."""


def run_once(contender: Contender, stdout: Any = subprocess.DEVNULL) -> Run:
    """Run `contender` once; exit with its stderr when it fails."""
    with tempfile.TemporaryFile() as stderr:
        start = time.perf_counter()
        process = subprocess.Popen(contender.argv, stdout=stdout, stderr=stderr, env=ENV)
        _, status, usage = os.wait4(process.pid, 0)  # rusage of this one child
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode not in contender.ok_codes:
            stderr.seek(0)
            tail = stderr.read().decode(errors="replace").strip().splitlines()[-5:]
            sys.exit(f"{contender.name} exited {process.returncode}:\n" + "\n".join(tail))
    return Run(seconds, usage.ru_maxrss / 1024)  # ru_maxrss is in KiB on Linux


def ensure_inputs(workdir: Path) -> tuple[Path, Path]:
    """The frozen graph and checkpoint prefix in `workdir`, generated unless already there."""
    graph, prefix = workdir / GRAPH_NAME, workdir / CHECKPOINT_PREFIX
    if graph.exists() and prefix.with_suffix(".index").exists():
        print(f"reusing {graph}", file=sys.stderr)
        return graph, prefix
    print(f"generating ResNet-50 graph and checkpoint in {workdir} ...", file=sys.stderr)
    generator = [sys.executable, str(HERE / "make_resnet50.py"), str(workdir)]
    subprocess.run(generator, check=True, env=ENV, stdout=sys.stderr)
    return graph, prefix


def run_json(contender: Contender) -> tuple[Run, Any]:
    """Run `contender` once (an untimed warm-up) and parse what it printed as JSON."""
    with tempfile.TemporaryFile() as out:
        run = run_once(contender, stdout=out)
        out.seek(0)
        return run, json.load(out)


def check_list_bn(contender: Contender) -> Run:
    """Run list-bn once (untimed warm-up) and check it found every BN layer, in inference."""
    run, report = run_json(contender)
    layers = report["layers"]
    inference = sum(layer["mode"] == "inference" for layer in layers)
    print(
        f"list-bn found {len(layers)} BN layers ({inference} in inference mode); "
        f"expected {BN_LAYERS}",
        file=sys.stderr,
    )
    if len(layers) != BN_LAYERS or inference != BN_LAYERS:
        sys.exit("list-bn did not find every BN layer of ResNet-50 in inference mode")
    return run


def prepare_run_baseline(workdir: Path, graph: Path, prefix: Path, batch: int) -> list[str]:
    """Write tf-run's reference graph, inputs and fetch list with bnaudit; its arguments."""
    print(f"writing the patched reference and batch-{batch} inputs ...", file=sys.stderr)
    writer = [sys.executable, str(HERE / "make_run_baseline.py"), str(prefix), str(graph)]
    subprocess.run([*writer, str(workdir), "--batch", str(batch)], check=True, env=ENV)
    files = [graph, workdir / REFERENCE_NAME, workdir / inputs_name(batch), workdir / FETCHES_NAME]
    return [str(path) for path in files]


def check_run(run: Contender, baseline: Contender, fetches: Path) -> int:
    """Warm both up; check compare compared what tf-run fetches; the bytes tf-run holds.

    compare fetches each layer's output and, for the layers whose own difference it
    measures, its input (in ResNet-50 a convolution's output, never another layer's)."""
    _, report = run_json(run)
    layers = report["layers"]
    compared = sum(layer.get("activation") is not None for layer in layers)
    compared += sum(layer.get("own_activation") is not None for layer in layers)
    compared += len(report["outputs"])
    expected = len(json.loads(fetches.read_text(encoding="utf-8")))
    print(f"compare compared {compared} tensors; tf-run fetches {expected}", file=sys.stderr)
    if compared != expected:
        sys.exit("compare and the TensorFlow baseline do not fetch the same tensors")
    _, fetched_bytes = run_json(baseline)
    return int(fetched_bytes)


def compare_available() -> bool:
    """True once `bnaudit compare` exists (`compare --help` exits 0)."""
    argv = [sys.executable, "-m", "bnaudit", "compare", "--help"]
    return subprocess.run(argv, capture_output=True, env=ENV).returncode == 0


def measure(contenders: list[Contender], repeat: int) -> dict[str, list[Run]]:
    """Run every contender `repeat` times, interleaved, rotating the order each round."""
    runs: dict[str, list[Run]] = {c.name: [] for c in contenders}
    for round_ in range(repeat):
        shift = round_ % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            runs[contender.name].append(run_once(contender))
        print(f"round {round_ + 1}/{repeat} done", file=sys.stderr)
    return runs


def summary(runs: list[Run]) -> dict[str, Any]:
    times = [r.seconds for r in runs]
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "times_s": times,
        "peak_rss_mb": max(r.peak_rss_mb for r in runs),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workdir",
        type=Path,
        help="where to generate (or reuse) the graph and checkpoint; default: a temp dir",
    )
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per contender")
    parser.add_argument(
        "--batch", type=int, default=32, help="batch of compare's run and of tf-run"
    )
    parser.add_argument(
        "--no-run", action="store_true", help="skip compare's run and tf-run (minutes)"
    )
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.repeat < 1 or args.batch < 1:
        sys.exit("--repeat and --batch must be at least 1")
    if args.workdir is not None:
        if args.workdir.resolve().is_relative_to(REPO):
            sys.exit(f"--workdir {args.workdir} is inside the repository; pick another place")
        args.workdir.mkdir(parents=True, exist_ok=True)
        return bench(args.workdir, args)
    with tempfile.TemporaryDirectory(prefix="bnaudit-bench-") as workdir:
        return bench(Path(workdir), args)


def bench(workdir: Path, args: argparse.Namespace) -> int:
    graph, prefix = ensure_inputs(workdir)
    python = sys.executable
    list_bn = Contender(
        "list-bn",
        [python, "-m", "bnaudit", "list-bn", str(graph), "--format", "json"],
        frozenset({0, 1}),  # findings do not invalidate a timing
    )
    contenders = [
        list_bn,
        Contender("tf-parse", [python, "-c", TF_PARSE, str(graph)]),
        Contender("bytes-only", [python, "-c", BYTES_ONLY, str(graph)]),
    ]
    has_compare = compare_available()
    has_run = has_compare and not args.no_run
    if has_compare:
        compare = [python, "-m", "bnaudit", "compare", str(prefix), str(graph)]
        contenders += [
            Contender("compare", [*compare, "--no-run", "--format", "json"], frozenset({0, 1})),
            Contender("tf-compare", [python, "-c", TF_COMPARE, str(prefix), str(graph)]),
        ]
    if has_run:
        baseline_args = prepare_run_baseline(workdir, graph, prefix, args.batch)
        run_contender = Contender(
            "run",
            [*compare, "--format", "json", "--batch", str(args.batch), "--quiet"],
            frozenset({0, 1}),
        )
        tf_run = Contender("tf-run", [python, "-c", TF_RUN, *baseline_args])
        contenders += [run_contender, tf_run]
    check_list_bn(list_bn)
    fetched_bytes = check_run(run_contender, tf_run, Path(baseline_args[-1])) if has_run else 0
    for contender in contenders[1:]:
        if contender.name not in ("run", "tf-run"):
            run_once(contender)  # warm-up, untimed (check_run warmed up the other two)
    results = {name: summary(runs) for name, runs in measure(contenders, args.repeat).items()}

    ratios, verdicts = judge(results)
    size_mb = graph.stat().st_size / 1e6
    print(f"graph: {graph.name}, {size_mb:.1f} MB; {args.repeat} runs each, fresh processes")
    print(f"{'contender':<12} {'median s':>9} {'min s':>7} {'peak RSS MB':>12}")
    for name, result in results.items():
        print(
            f"{name:<12} {result['median_s']:>9.3f} {result['min_s']:>7.3f} "
            f"{result['peak_rss_mb']:>12.0f}"
        )
    if not has_compare:
        print("compare: not available yet")
    if has_run:
        print(
            f"run at batch {args.batch}: every compared tensor of both graphs holds "
            f"{fetched_bytes / 2**20:.0f} MB (what tf-run keeps); compare's peak RSS is "
            f"{results['run']['peak_rss_mb']:.0f} MB, tf-run's "
            f"{results['tf-run']['peak_rss_mb']:.0f} MB "
            f"(compare / tf-run = {ratios['run_over_tf_run_rss']:.2f}x)"
        )
    for text, met in verdicts:
        print(f"{text}: {'ok' if met else 'MISSED'}")
    fastest = {name: result["min_s"] for name, result in results.items()}
    print(
        "(the same ratios from each contender's fastest run: "
        f"{fastest['tf-parse'] / fastest['list-bn']:.1f}x, "
        f"{fastest['list-bn'] / fastest['bytes-only']:.1f}x"
        + (f", {fastest['run'] / fastest['tf-run']:.2f}x" if has_run else "")
        + ")"
    )
    passed = all(met for _, met in verdicts)
    if args.json is not None:
        numbers = {
            "graph_mb": size_mb,
            "repeat": args.repeat,
            "batch": args.batch if has_run else None,
            "fetched_mb": fetched_bytes / 2**20 if has_run else None,
            "contenders": results,
            "ratios": ratios,
            "passed": passed,
        }
        args.json.write_text(json.dumps(numbers, indent=2) + "\n", encoding="utf-8")
    return 0 if passed else 1


def judge(results: dict[str, dict[str, Any]]) -> tuple[dict[str, float], list[tuple[str, bool]]]:
    """The ratios between contenders' medians, and each target's verdict."""
    median = {name: result["median_s"] for name, result in results.items()}
    ratios = {
        "tf_parse_over_list_bn": median["tf-parse"] / median["list-bn"],
        "list_bn_over_bytes_only": median["list-bn"] / median["bytes-only"],
    }
    verdicts = [
        (
            f"list-bn is {ratios['tf_parse_over_list_bn']:.1f}x faster than TF parse "
            "(target >= 10x)",
            ratios["tf_parse_over_list_bn"] >= 10,
        ),
        (
            f"list-bn / bytes-only = {ratios['list_bn_over_bytes_only']:.1f}x (target <= 2x)",
            ratios["list_bn_over_bytes_only"] <= 2,
        ),
    ]
    if "compare" in median:
        ratios["tf_compare_over_compare"] = median["tf-compare"] / median["compare"]
        verdicts.append(
            (
                f"compare --no-run is {ratios['tf_compare_over_compare']:.1f}x faster than "
                "TF checkpoint load + parse (target >= 10x)",
                ratios["tf_compare_over_compare"] >= 10,
            )
        )
    if "run" in median:
        ratios["run_over_tf_run"] = median["run"] / median["tf-run"]
        ratios["run_over_tf_run_rss"] = (
            results["run"]["peak_rss_mb"] / results["tf-run"]["peak_rss_mb"]
        )
        verdicts.append(
            (
                f"compare (run) / TF baseline = {ratios['run_over_tf_run']:.2f}x (target <= 1.5x)",
                ratios["run_over_tf_run"] <= 1.5,
            )
        )
    return ratios, verdicts


if __name__ == "__main__":
    sys.exit(main())
