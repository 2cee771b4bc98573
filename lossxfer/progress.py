"""Progress reporting from the library without printing: a plain callback.

Library functions take `progress: ProgressFn | None` and call it as
`progress(description, done, total)`; the CLI turns the calls into a Rich bar on a terminal or
occasional log lines in batch jobs.
"""

from __future__ import annotations

from collections.abc import Callable

ProgressFn = Callable[[str, int, "int | None"], None]


def no_progress(description: str, done: int, total: int | None) -> None:
    """The default callback: report nothing."""
