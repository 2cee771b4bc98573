"""The CLI frame: start-up without heavy imports, version, errors and exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, run_subprocess

HEAVY = ("torch", "numpy", "h5py", "sklearn", "cupy", "scipy", "matplotlib")


def _run(*args: str) -> tuple[set[str], int, str]:
    """Run the CLI in a fresh interpreter: the modules it loaded, its exit code, its stderr."""
    code = (
        "import sys\n"
        "from lossxfer.cli import main\n"
        "try:\n"
        f"    main({list(args)!r})\n"
        "    code = 0\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "print('--modules--', *sorted(sys.modules))\n"
        "sys.exit(code)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False
    )
    return set(proc.stdout.split("--modules--")[-1].split()), proc.returncode, proc.stderr


def _imported_modules(*args: str) -> set[str]:
    return _run(*args)[0]


def test_help_imports_nothing_heavy() -> None:
    loaded = _imported_modules("--help")
    assert "lossxfer.cli" in loaded
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}


def test_a_verb_builds_only_its_own_command() -> None:
    """`lossxfer info ...` imports the info verb alone (start-up is Typer reading parameters),
    and no pydantic (Typer 0.29 builds a pydantic adapter per parameter on every run)."""
    loaded, code, _ = _run("info", "--help")
    assert code == 0
    verbs = {m for m in loaded if m.startswith("lossxfer.cli.")} - {
        "lossxfer.cli.app", "lossxfer.cli.common", "lossxfer.cli.completion"
    }  # fmt: skip
    assert verbs == {"lossxfer.cli.info"}
    assert "pydantic" not in loaded


def test_help_and_unknown_verbs_load_every_verb_in_study_order() -> None:
    from lossxfer.cli import VERBS

    loaded, code, stderr = _run("extrct")
    assert code == 2 and "Did you mean 'extract'?" in stderr
    assert {f"lossxfer.cli.{m}" for m in VERBS.values()} <= loaded
    listed = [
        line.split()[1] for line in run_subprocess("--help").stdout.splitlines()
        if line.startswith("│ ") and len(line.split()) > 2 and line.split()[1] in VERBS
    ]  # fmt: skip
    assert listed == list(VERBS)


def test_version() -> None:
    run = run_subprocess("--version")
    assert run.code == 0
    assert run.stdout.startswith("lossxfer ")


def test_unknown_verb_is_usage_error() -> None:
    run = run_subprocess("frobnicate")
    assert run.code == 2
    assert "frobnicate" in run.stderr


# Usage errors (caught while parsing or by light checks) and input errors (the input's kind is
# sniffed from its first bytes) of every verb: none may import a heavy module first.
FAST_ERRORS = {
    "train usage": (["train", "--data", "digits", "-o", "{d}/out", "--loss", "sofmax"], 2),
    "train epochs": (["train", "--data", "digits", "-o", "{d}/out", "--epochs", "-1"], 2),
    "train loss-opt": (["train", "--data", "digits", "-o", "{d}/o", "--loss-opt", "zz=1"], 2),
    "train exists": (["train", "--data", "digits", "-o", "{d}/run"], 2),
    "train folder": (["train", "--data", "imagefolder:{d}/missing", "-o", "{d}/out"], 3),
    "finetune usage": (["finetune", "{ckpt}", "--data", "digits", "-o", "{d}/o", "--lr", "x"], 2),
    "finetune input": (["finetune", "{d}/run", "--data", "digits", "-o", "{d}/out"], 3),
    "extract usage": (
        ["extract", "{ckpt}", "--data", "digits", "-o", "{d}/a.h5", "--pool", "mx"],
        2,
    ),
    "extract input": (["extract", "{d}/acts.h5", "--data", "digits", "-o", "{d}/a.h5"], 3),
    "extract exists": (["extract", "{ckpt}", "--data", "digits", "-o", "{d}/acts.h5"], 2),
    "probe usage": (["probe", "{d}/acts.h5", "--method", "linaer"], 2),
    "probe input": (["probe", "{ckpt}"], 3),
    "separation input": (["separation", "{d}/missing.h5"], 3),
    "cka usage": (["cka", "{d}/acts.h5", "--estimator", "linaer"], 2),
    "cka input": (["cka", "{d}/acts.h5", "{d}/model.pth"], 3),
    "store merge input": (["store", "merge", "{ckpt}", "-o", "{d}/m.h5"], 3),
    "info input": (["info", "{d}/model.pth"], 3),
    "info checkpoint": (["info", "{ckpt}"], 0),
}


@pytest.mark.parametrize("case", list(FAST_ERRORS))
def test_errors_come_before_heavy_imports(case: str, tmp_path: Path) -> None:
    from test_checkpoint import make_checkpoint

    (tmp_path / "run").mkdir()
    ckpt = tmp_path / "run" / "model.safetensors"
    make_checkpoint(ckpt)
    (tmp_path / "acts.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    (tmp_path / "model.pth").write_bytes(b"PK\x03\x04" + bytes(64))  # torch.save's zip
    argv, code = FAST_ERRORS[case]
    args = [a.format(d=tmp_path, ckpt=ckpt) for a in argv]
    loaded, exit_code, stderr = _run(*args)
    assert exit_code == code, stderr
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}, case
    assert code == 0 or stderr.count("\n") == 1


def test_wrong_files_say_what_they_are_and_who_reads_them(tmp_path: Path) -> None:
    from test_checkpoint import make_checkpoint

    (tmp_path / "run").mkdir()
    make_checkpoint(tmp_path / "run" / "model.safetensors")
    (tmp_path / "model.pth").write_bytes(b"PK\x03\x04" + bytes(64))
    (tmp_path / "weights.bin").write_bytes(b"\x80\x02}q\x00.")  # a raw pickle
    (tmp_path / "acts.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    cases = {
        ("extract", "run"): "a run directory, not a checkpoint; "
        "did you mean {d}/run/model.safetensors?",
        ("extract", "model.pth"): "is a pickled PyTorch file (.pth/.bin/.ckpt), which lossxfer "
        "never loads, not a lossxfer checkpoint; convert it once",
        ("finetune", "weights.bin"): "is a pickled PyTorch file",
        ("extract", "acts.h5"): "is an HDF5 activation store (read by probe, separation, cka, "
        "info), not a lossxfer checkpoint",
        ("probe", "run/model.safetensors"): "is a lossxfer checkpoint (read by extract, "
        "finetune, info), not an HDF5 activation store",
    }
    for (verb, name), message in cases.items():
        extra = ["--data", "digits", "-o", str(tmp_path / "out")] if verb != "probe" else []
        _, code, stderr = _run(verb, str(tmp_path / name), *extra)
        assert code == 3 and message.format(d=tmp_path) in stderr, stderr
