"""The exception root for failures the user can fix, and the documented exit codes."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Process exit codes; the README's "Exit codes" section documents them."""

    PASSED = 0
    """No finding at or above the `--fail-on` threshold."""
    FINDINGS = 1
    """At least one finding at or above the threshold."""
    USAGE = 2
    """The command line was wrong (click's own code)."""
    INPUT = 3
    """An input could not be read or used."""


class BnauditError(Exception):
    """A failure caused by the user's input; its message is one line that says what to do."""

    exit_code = ExitCode.INPUT


class UsageError(BnauditError):
    """The command line asks for something bnaudit refuses (exit 2, like click's own errors)."""

    exit_code = ExitCode.USAGE
