"""Atomic outputs: temporaries beside the output, renamed into place, cleaned up."""

from __future__ import annotations

import os
import time
from pathlib import Path

from lossxfer.fsio import STALE_AFTER_S, write_text_atomic


def test_output_gets_the_usual_mode(tmp_path: Path) -> None:
    out = write_text_atomic(tmp_path / "r.json", "{}")
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


def test_rerun_removes_a_killed_writers_stale_temporary(tmp_path: Path) -> None:
    stale = tmp_path / ".out.json.abc123.tmp"
    fresh = tmp_path / ".out.json.def456.tmp"  # maybe a live writer: left alone
    other = tmp_path / ".other.json.abc123.tmp"
    for leftover in (stale, fresh, other):
        leftover.write_text("half")
    old = time.time() - STALE_AFTER_S - 60
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    write_text_atomic(tmp_path / "out.json", "{}")
    assert not stale.exists()
    assert fresh.exists() and other.exists()
    assert (tmp_path / "out.json").read_text() == "{}"
