"""Run TensorFlow's part of `compare` in a child process the parent can stop.

TensorFlow cannot be interrupted from inside: a graph whose loop never ends runs forever (its
session timeouts only bound blocking ops), and a graph TensorFlow mishandles can end the
process with a signal. So the run happens in a forked child, before the parent has imported
TensorFlow, and the parent waits for its answer with a deadline: past `timeout` seconds the
child is killed and the user gets one line, as for a child that died.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from bnaudit.errors import BnauditError

T = TypeVar("T")
Step = Callable[[str], None]


LOAD_LIMIT = 120.0
"""Seconds the child may take to import TensorFlow (`prepare`) before `timeout` starts."""


def run_isolated(
    work: Callable[[Step], T],
    step: Step,
    timeout: float,
    label: str,
    fork: bool | None = None,
    prepare: Callable[[], object] | None = None,
) -> T:
    """`work(step)` in a child process; its result, or its BnauditError, in this one.

    A process that has imported TensorFlow already (a test session, a notebook) cannot fork
    safely: TensorFlow's threads do not survive it. There the work runs in this process,
    without the deadline. `fork` overrides that choice (for work that never touches
    TensorFlow). `prepare` (importing TensorFlow) runs first, within `LOAD_LIMIT`; the
    `timeout` counts from its end, so that it bounds the run, not the import.
    """
    if not (fork if fork is not None else "tensorflow" not in sys.modules):
        if prepare is not None:
            prepare()
        return work(step)
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(sender, work, prepare), daemon=True)
    child.start()
    sender.close()
    ready = prepare is None
    deadline = time.monotonic() + (timeout if ready else LOAD_LIMIT)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _late(ready, timeout, label)
            if not receiver.poll(min(left, 0.2)):
                if not child.is_alive() and not receiver.poll(0):
                    break
                continue
            try:
                kind, payload = receiver.recv()
            except EOFError:
                break
            if kind == "ready":
                ready = True
                deadline = time.monotonic() + timeout
            elif kind == "step":
                step(payload)
            elif kind == "result":
                return payload  # type: ignore[no-any-return]
            else:
                raise payload
        child.join(5)
        raise BnauditError(f"TensorFlow {_death(child.exitcode)} while running {label}")
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        receiver.close()


def _late(ready: bool, timeout: float, label: str) -> BnauditError:
    if not ready:
        return BnauditError(f"TensorFlow took longer than {LOAD_LIMIT:g} s to load")
    return BnauditError(
        f"the run of {label} took longer than --timeout {timeout:g} s and was stopped (a loop "
        "that never ends, or a model slower than that); raise --timeout for a slow model, or "
        "use --no-run for the static audit"
    )


def _death(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name} (out of memory, or a crash in TensorFlow)"
    return f"stopped without an answer (exit status {code})"


def _child(sender: Any, work: Callable[[Step], Any], prepare: Callable[[], object] | None) -> None:
    try:
        if prepare is not None:
            prepare()
            sender.send(("ready", None))
        result = work(lambda text: sender.send(("step", text)))
        sender.send(("result", result))
    except BnauditError as error:
        sender.send(("error", error))
    except BaseException as error:  # a bug: the parent reports it as one
        sender.send(("error", RuntimeError(f"{type(error).__name__}: {error}")))
    finally:
        sender.close()
        os._exit(0)  # no interpreter teardown: TensorFlow's is slow and noisy
