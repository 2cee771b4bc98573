"""`--shard i/N`: the one parser and row split shared by `extract` and `cka`.

Part i of N takes the contiguous range [i·n/N, (i+1)·n/N) of n units (rows, or minibatches),
so the N parts tile [0, n) exactly and their sizes differ by at most one.
"""

from __future__ import annotations

import re

from lossxfer.errors import UsageError

_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'2/8' → (2, 8) with 0 ≤ i < N; None stays None; anything else is a usage error (exit 2)."""
    if text is None:
        return None
    m = _SHARD.fullmatch(text)
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise UsageError(f"--shard {text!r}: expected i/N with 0 ≤ i < N (e.g. 0/4 … 3/4)")
    return int(m.group(1)), int(m.group(2))


def shard_range(n: int, shard: tuple[int, int] | None) -> tuple[int, int]:
    """Units [lo, hi) of n that part i of N takes (all of them when not sharded)."""
    if shard is None:
        return 0, n
    i, count = shard
    return n * i // count, n * (i + 1) // count
