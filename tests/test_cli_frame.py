"""The CLI frame: start-up without heavy imports, version, errors and exit codes."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO, run_subprocess

HEAVY = ("torch", "numpy", "h5py", "sklearn", "cupy", "scipy", "matplotlib")


def _imported_modules(*args: str) -> set[str]:
    code = (
        "import sys\n"
        "from lossxfer.cli import main\n"
        "try:\n"
        f"    main({list(args)!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('\\n'.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    return set(proc.stderr.split())


def test_help_imports_nothing_heavy() -> None:
    loaded = _imported_modules("--help")
    assert "lossxfer.cli" in loaded
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}


def test_version() -> None:
    run = run_subprocess("--version")
    assert run.code == 0
    assert run.stdout.startswith("lossxfer ")


def test_unknown_verb_is_usage_error() -> None:
    run = run_subprocess("frobnicate")
    assert run.code == 2
    assert "frobnicate" in run.stderr
