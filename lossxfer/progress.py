"""Progress reporting from the library without printing: a plain callback.

Library functions take `progress: ProgressFn | None` and call it as
`progress(description, done, total)`; the CLI turns the calls into a Rich bar on a terminal or
occasional log lines in batch jobs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

ProgressFn = Callable[[str, int, "int | None"], None]
LOG = logging.getLogger("lossxfer")


class Stages:
    """Wall time of each stage of a verb (load, data, forward, write), logged at debug level
    (`--debug`) as each ends, so a slow run says where its time went."""

    def __init__(self) -> None:
        self.last = time.perf_counter()

    def done(self, name: str, seconds: float | None = None) -> None:
        """Stage `name` ended now (its time since the last stage), or took `seconds`."""
        now = time.perf_counter()
        LOG.debug("stage %s: %.2f s", name, now - self.last if seconds is None else seconds)
        self.last = now


def no_progress(description: str, done: int, total: int | None) -> None:
    """The default callback: report nothing."""
