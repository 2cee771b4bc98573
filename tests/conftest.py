"""Shared test helpers: run the CLI in-process or as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@dataclass
class CliRun:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """cli("train", "--data", "digits", ...) → CliRun, running `lossxfer` in this process."""
    from lossxfer.cli import main

    def run(*args: object) -> CliRun:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return CliRun(code, out, err)

    return run


def run_subprocess(*args: object, env: dict[str, str] | None = None, **kw) -> CliRun:
    """Run `python -m lossxfer ARGS` in a fresh interpreter (for import-time and signal tests)."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "lossxfer", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=kw.pop("cwd", REPO),
        **kw,
    )
    return CliRun(proc.returncode, proc.stdout, proc.stderr)
