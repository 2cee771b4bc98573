"""The one `--shard i/N` parser and row split that extract and cka share."""

from __future__ import annotations

import itertools

import pytest

from lossxfer.errors import UsageError
from lossxfer.shards import parse_shard, shard_range


def test_parse_shard_accepts_i_of_n() -> None:
    assert parse_shard("2/8") == (2, 8)
    assert parse_shard(" 0 / 1 ") == (0, 1)
    assert parse_shard(None) is None


@pytest.mark.parametrize("text", ["8/8", "1/0", "-1/4", "1/1x", "a/b", "", "3"])
def test_parse_shard_rejects(text: str) -> None:
    with pytest.raises(UsageError, match="expected i/N with 0 ≤ i < N"):
        parse_shard(text)


@pytest.mark.parametrize(("n", "parts"), [(0, 3), (10, 3), (7, 7), (3, 5), (1000, 8)])
def test_shard_ranges_tile_all_units_once(n: int, parts: int) -> None:
    ranges = [shard_range(n, (i, parts)) for i in range(parts)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    sizes = [hi - lo for lo, hi in ranges]
    assert max(sizes) - min(sizes) <= 1
    assert shard_range(n, None) == (0, n)
