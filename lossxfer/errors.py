"""One error hierarchy; each class carries the exit code of docs/cli.md, "Exit status".

The CLI maps any LossxferError to one line on stderr and its exit code; anything else is an
internal error (exit 1). Library code raises these and never exits.
"""

from __future__ import annotations


class LossxferError(Exception):
    """Base of every error the user can act on."""

    exit_code = 1


class UsageError(LossxferError):
    """Bad option value or configuration (exit 2)."""

    exit_code = 2


class InputError(LossxferError):
    """A bad, missing or incompatible input file or dataset (exit 3)."""

    exit_code = 3


class DeviceError(LossxferError):
    """The requested device or backend is not available (exit 4)."""

    exit_code = 4


class DivergedError(LossxferError):
    """Training produced a non-finite loss (exit 5)."""

    exit_code = 5


class Interrupted(LossxferError):
    """Ctrl-C; state was saved where there was any (exit 130)."""

    exit_code = 130


class Preempted(Interrupted):
    """SIGTERM/SIGUSR1: state saved so that --resume continues (exit 143)."""

    exit_code = 143


EXIT_CODES = {
    0: "success",
    1: "internal error, or an output that could not be written (disk full, permissions); "
    "the message says which",
    2: "usage or configuration error",
    3: "bad or missing input file or dataset",
    4: "requested device or backend unavailable",
    5: "training diverged (non-finite loss)",
    130: "interrupted (Ctrl-C)",
    143: "preempted (SIGTERM/SIGUSR1) after saving state",
}
