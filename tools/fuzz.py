"""Fuzz bnaudit with seeded hostile inputs and report every broken promise.

    python tools/fuzz.py --seed N --count 2000 [--workdir DIR] [--jobs 2] [--json out.json]

Makes `--count` cases with `fixtures/hostile.py` (every hostile variant once, then random
byte-level mutations of the fixtures' graphs, checkpoint indexes and data shards, `.meta`,
`.weights.h5` and `.keras` files, and re-draws of the variants with random parameters), runs
each in its own `python -m bnaudit ...` process (`--jobs` at a time), and checks the promises
of bnaudit's README:

- the exit code is one the case allows; no traceback; no signal; exit 2 or 3 prints exactly
  one `bnaudit: error:` line (or click's `Usage:` block for exit 2), naming what it must;
- the generic "could not process the input" message never appears for a deterministic
  hostile variant, and for at most `--generic-rate` (1%) of all cases;
- every input file is byte-identical afterwards (hashed before and after), no marker file
  a hostile graph would write appears, nothing appears beside the inputs;
- each child ends before its timeout (60 s), peaks under 1 GB of resident memory (from
  `os.wait4`'s rusage; a child passing `--kill-rss-mb` is killed), holds no more than the
  case allows in its own TMPDIR, and leaves nothing there.

It prints, per class, the runs, failures, the largest peak RSS and the wall time, then every
failing case with its command, what broke, and the last stderr line; `--json` writes all of
it, case by case (exit, time, peak RSS, temporary disk, input hashes before and after, marker
files). Exit status: 0 when every promise held, 1 otherwise.

The workdir holds every case's files (about 1 MB a case; sparse files take no space); it is
a temporary directory removed at the end unless `--workdir` names one. Cases that run graphs
import TensorFlow (about 4 s each); `--tf-share` sets how many of the random cases do.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fixtures"))

import hostile


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python tools/fuzz.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit status: 0 when every promise held, 1 when any broke.",
    )
    parser.add_argument("--seed", type=int, default=0, help="RNG seed (default 0)")
    parser.add_argument("--count", type=int, default=2000, help="number of cases (default 2000)")
    parser.add_argument("--workdir", type=Path, help="where cases are written (kept)")
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    parser.add_argument("--json", type=Path, help="write every case's result to this file")
    parser.add_argument(
        "--tf-share",
        type=float,
        default=0.03,
        help="share of the random cases that run graphs with TensorFlow (default 0.03)",
    )
    parser.add_argument(
        "--mutation-share",
        type=float,
        default=0.55,
        help="share of the random cases that are byte-level mutations (default 0.55)",
    )
    parser.add_argument(
        "--classes", nargs="*", choices=hostile.CLASSES, help="only run cases of these classes"
    )
    parser.add_argument(
        "--generic-rate",
        type=float,
        default=0.01,
        help="largest share of generic 'could not process' messages tolerated (default 0.01)",
    )
    parser.add_argument(
        "--kill-rss-mb",
        type=float,
        default=3072.0,
        help="kill a child whose resident memory passes this (default 3072)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser.parse_args(argv)


def _record(case: hostile.Case, result: hostile.Result, problems: list[str]) -> dict[str, Any]:
    return {
        **case.to_json(),
        "exit": result.returncode,
        "seconds": round(result.seconds, 3),
        "max_rss_mb": round(result.max_rss_mb, 1),
        "temp_peak_mb": round(result.temp_peak_mb, 1),
        "temp_left": result.temp_left,
        "timed_out": result.timed_out,
        "memory_killed": result.memory_killed,
        "generic": result.generic,
        "hashes_before": result.hashes_before,
        "hashes_after": result.hashes_after,
        "markers": list(case.markers),
        "markers_found": result.markers_found,
        "dirs_changed": result.dirs_changed,
        "stderr_tail": result.stderr[-2000:],
        "problems": problems,
    }


def _table(records: list[dict[str, Any]]) -> str:
    by_class: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_class[record["class"]].append(record)
    rows = [("class", "runs", "failed", "generic", "max RSS MB", "max s", "total s")]
    for klass in hostile.CLASSES:
        items = by_class.get(klass, [])
        if not items:
            continue
        rows.append(
            (
                klass,
                str(len(items)),
                str(sum(bool(r["problems"]) for r in items)),
                str(sum(r["generic"] for r in items)),
                f"{max(r['max_rss_mb'] for r in items):.0f}",
                f"{max(r['seconds'] for r in items):.1f}",
                f"{sum(r['seconds'] for r in items):.0f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    )


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    for stream in (sys.stdout, sys.stderr):  # file names of hostile cases hold odd bytes
        stream.reconfigure(errors="backslashreplace")  # type: ignore[attr-defined]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bnaudit-fuzz-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    made = hostile.cases(args.seed, args.count, workdir, args.tf_share, args.mutation_share)
    if args.classes:
        made = [c for c in made if c.klass in args.classes]
    if not args.quiet:
        took = time.monotonic() - started
        print(f"fuzz: {len(made)} cases made in {took:.0f} s under {workdir}", file=sys.stderr)
    records: list[dict[str, Any]] = []

    def one(case: hostile.Case) -> dict[str, Any]:
        result = hostile.run_case(case, kill_rss_mb=args.kill_rss_mb, scratch=workdir)
        return _record(case, result, hostile.check(case, result))

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for number, record in enumerate(pool.map(one, made), 1):
            records.append(record)
            if not args.quiet and (record["problems"] or number % 50 == 0):
                state = "FAIL " + record["name"] if record["problems"] else "ok"
                print(f"fuzz: {number}/{len(made)} {state}", file=sys.stderr)

    generic = [r for r in records if r["generic"]]
    rate = len(generic) / max(1, len(records))
    failed = [r for r in records if r["problems"]]
    print(_table(records))
    print(
        f"\n{len(records)} cases, {len(failed)} broke a promise, {len(generic)} generic "
        f"messages ({rate:.1%}), {time.monotonic() - started:.0f} s"
    )
    for record in failed:
        _show(record, "FAIL")
        for problem in record["problems"]:
            print(f"  - {problem}")
    for record in generic:
        if not record["problems"]:
            _show(record, "GENERIC")
    if args.json:
        summary = {
            "seed": args.seed,
            "count": len(records),
            "failed": len(failed),
            "generic": len(generic),
            "generic_rate": rate,
            "cases": records,
        }
        args.json.write_text(json.dumps(summary, indent=1))
    broken = bool(failed) or rate > args.generic_rate
    if args.workdir is None and not broken:
        shutil.rmtree(workdir, ignore_errors=True)
    elif args.workdir is None:
        print(f"\ncases kept in {workdir} to reproduce the failures")
    return 1 if broken else 0


def _show(record: dict[str, Any], label: str) -> None:
    print(f"\n{label} {record['name']}  ({record['note']})")
    print(f"  command: {record['command']}")
    print(
        f"  exit {record['exit']}, {record['seconds']:.1f} s, "
        f"peak RSS {record['max_rss_mb']:.0f} MB"
    )
    tail = [line for line in record["stderr_tail"].splitlines() if line.strip()]
    if tail:
        print(f"  stderr: {tail[-1][:300]}")


if __name__ == "__main__":
    sys.exit(main())
