"""The README runs as written: its shell blocks, in a temporary folder, on digits.

A block that cannot run here says so where a reader sees it, on the line before its fence:
`<!-- not run by tests/test_readme.py: REASON -->`. Such a block is reported as skipped with
its reason (pytest -ra), never passed over silently; every other block must succeed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

NOT_RUN = re.compile(r"<!-- not run by tests/test_readme\.py: (.+?) -->")
FENCE = re.compile(r"^```bash\n(.*?)^```$", re.S | re.M)


def shell_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """(line, code, reason it is not run or None) of every ```bash block."""
    blocks = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = NOT_RUN.fullmatch(before.strip())
        blocks.append((line, match.group(1), marker.group(1) if marker else None))
    return blocks


BLOCKS = shell_blocks((REPO / "README.md").read_text(encoding="utf-8"))


def test_the_readme_has_runnable_blocks_and_every_marker_names_a_reason() -> None:
    assert any(reason is None for _, _, reason in BLOCKS)
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(NOT_RUN.findall(text)) == sum(reason is not None for _, _, reason in BLOCKS), (
        "a not-run marker must sit on the line just before a ```bash fence"
    )


@pytest.mark.slow
@pytest.mark.parametrize(("line", "code", "reason"), BLOCKS, ids=[f"line{b[0]}" for b in BLOCKS])
def test_readme_block_runs(tmp_path: Path, line: int, code: str, reason: str | None) -> None:
    if reason is not None:
        pytest.skip(f"README.md line {line}: {reason}")
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "lossxfer").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m lossxfer "$@"\n')
    (shim / "lossxfer").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
    }
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=580,
    )
    assert proc.returncode == 0, f"README.md block at line {line} failed:\n{proc.stderr[-3000:]}"
