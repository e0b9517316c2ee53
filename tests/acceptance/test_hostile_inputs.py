"""Hostile inputs: bnaudit keeps the promises of its README (slow: a few hundred processes).

`fixtures/hostile.py` makes seeded cases of every hostile class (unsafe ops, a `.meta` whose
Saver reads another file, recursion, structures that explode a naive walk, pipes, gigabyte
declarations, zip bombs, outputs over inputs, malformed graphs and files, damage that must
not pass) plus random byte-level mutations of the fixtures. Each case runs in its own
`python -m bnaudit ...` process; `hostile.check` lists the promises it broke: exit code,
traceback, signal, one stderr line, what the error names, inputs byte-identical, no marker
file, time, peak memory, temporary disk. One test per class, so a failure names the class,
then each failing case with its command. `tools/fuzz.py` runs the same with thousands of
cases.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "fixtures"))

import hostile

SEED = 1
COUNT = 300
TIMEOUT = 30.0
JOBS = int(os.environ.get("BNAUDIT_HOSTILE_JOBS", "2"))
"""Cases run at once; this project's machine has two cores."""

Outcome = tuple[hostile.Case, hostile.Result, list[str]]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Outcome]]:
    workdir = tmp_path_factory.mktemp("hostile")
    # A hang shows within 30 s here (depth 40 takes a few seconds); tools/fuzz.py waits 60.
    made = hostile.cases(SEED, COUNT, workdir)
    made = [replace(case, timeout=min(case.timeout, TIMEOUT)) for case in made]

    def one(case: hostile.Case) -> Outcome:
        result = hostile.run_case(case, scratch=workdir)
        return case, result, hostile.check(case, result)

    with ThreadPoolExecutor(max_workers=JOBS) as pool:
        yield list(pool.map(one, made))


def _describe(case: hostile.Case, result: hostile.Result, problems: list[str]) -> str:
    return (
        f"{case.name} ({case.note}): {'; '.join(problems)}\n"
        f"    {case.command()}\n"
        f"    exit {result.returncode}, {result.seconds:.1f} s, {result.max_rss_mb:.0f} MB; "
        f"stderr: {hostile.summary_line(result)}"
    )


@pytest.mark.slow
@pytest.mark.parametrize("klass", hostile.CLASSES)
def test_promises_hold(klass: str, outcomes: list[Outcome]) -> None:
    mine = [outcome for outcome in outcomes if outcome[0].klass == klass]
    assert len(mine) >= 3, f"only {len(mine)} {klass} cases were made"
    failures = [_describe(*outcome) for outcome in mine if outcome[2]]
    if failures:
        pytest.fail(
            f"{len(failures)} of {len(mine)} {klass} cases broke a promise:\n"
            + "\n".join(failures),
            pytrace=False,
        )


@pytest.mark.slow
def test_generic_message_is_rare(outcomes: list[Outcome]) -> None:
    """The catch-all "could not process the input" is for real bugs: at most 1% of all cases
    (random mutations), never for a deterministic hostile variant (those fail above)."""
    generic = [(case, result) for case, result, _ in outcomes if result.generic]
    listed = "\n".join(
        f"{case.name}: {case.command()}\n    {hostile.summary_line(result)}"
        for case, result in generic
    )
    if len(generic) > 0.01 * len(outcomes):
        pytest.fail(
            f"{len(generic)} of {len(outcomes)} cases got the generic message:\n{listed}",
            pytrace=False,
        )


@pytest.mark.slow
def test_every_class_is_covered(outcomes: list[Outcome]) -> None:
    made = {case.klass for case, _, _ in outcomes}
    assert made == set(hostile.CLASSES)
    assert any(case.imports_tf for case, _, _ in outcomes), "no case reaches TensorFlow's run"
