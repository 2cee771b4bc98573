"""The main job and the cluster recipes, run end to end on tiny settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

SLURM = REPO / "examples" / "slurm"
SCRIPTS = [
    REPO / "examples" / "mini-study.sh",
    *sorted(SLURM.glob("*.sh")),
    *SLURM.glob("*.sbatch"),
]


def _bash(script: Path, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "LOSSXFER": f"{sys.executable} -m lossxfer", **env}
    return subprocess.run(
        ["bash", str(script)], env=full, cwd=cwd, capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse_and_pass_shellcheck(script: Path) -> None:
    subprocess.run(["bash", "-n", str(script)], check=True)
    shellcheck = Path(sys.executable).with_name("shellcheck")
    proc = subprocess.run(
        [str(shellcheck), "-x", script.name], cwd=script.parent, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout


@pytest.mark.slow
def test_slurm_array_tasks_run_locally(tmp_path: Path) -> None:
    """Each array script's per-task command lines, on digits with one objective and seed."""
    env = {
        "OUT": str(tmp_path / "study"),
        "DATA": "digits",
        "ARCH": "smallcnn",
        "OBJECTIVES": "softmax",
        "SEEDS": "1",
        "EPOCHS": "1",
        "BATCH_SIZE": "64",
        "TRANSFER": "digits",
        "CKA_SHARDS": "2",
        "LAUNCH": "",
    }
    tasks = [("train.sbatch", 0), ("extract_probe.sbatch", 0), ("cka.sbatch", 0)]
    tasks += [("cka.sbatch", 1), ("cka_merge.sbatch", 0), ("report.sbatch", None)]
    for script, task in tasks:
        task_env = {**env, **({"SLURM_ARRAY_TASK_ID": str(task)} if task is not None else {})}
        proc = _bash(SLURM / script, task_env, tmp_path)
        assert proc.returncode == 0, f"{script}[{task}]: {proc.stderr[-2000:]}"
    run = tmp_path / "study" / "runs" / "softmax-s0"
    for name in ("model.safetensors", "train.json", "digits.h5", "probe-digits.json"):
        assert (run / name).stat().st_size > 0, name
    assert (run / "cka-softmax.json").exists()
    assert "softmax" in (tmp_path / "study" / "report.md").read_text()
    out_of_range = _bash(SLURM / "train.sbatch", {**env, "SLURM_ARRAY_TASK_ID": "5"}, tmp_path)
    assert out_of_range.returncode == 2


@pytest.mark.slow
def test_mini_study_end_to_end(tmp_path: Path) -> None:
    env = {"OUT": str(tmp_path / "study"), "OBJECTIVES": "softmax cosine_softmax", "EPOCHS": "1"}
    proc = _bash(REPO / "examples" / "mini-study.sh", env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "softmax" in proc.stdout and "cosine_softmax" in proc.stdout
    plots = list((tmp_path / "study" / "plots").glob("*.png"))
    assert plots and all(p.stat().st_size > 1000 for p in plots)
    # A second run trains nothing (`train --resume` of complete runs), skips every finished
    # step and prints the same table.
    again = _bash(REPO / "examples" / "mini-study.sh", env, tmp_path)
    assert again.returncode == 0
    assert "skip" in again.stderr and "run   " not in again.stderr
    assert again.stdout == proc.stdout  # -q steps print nothing; the same table


@pytest.mark.slow
def test_mini_study_stops_every_step_at_the_first_failure(tmp_path: Path) -> None:
    """Objectives run JOBS at once: a failing one ends the study with its exit status, stops the
    others (SIGTERM to their process trees: training saves its state) and leaves nothing
    running."""
    out = tmp_path / "study"
    env = {"OUT": str(out), "OBJECTIVES": "no_such_loss softmax", "EPOCHS": "3", "JOBS": "2"}
    proc = _bash(REPO / "examples" / "mini-study.sh", env, tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "no_such_loss" in proc.stderr
    assert not (out / "report.md").exists()
    assert not (out / "runs" / "softmax-s0" / "model.safetensors").exists()
    left = subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True)
    assert left.stdout == "", f"still running: {left.stdout}"


@pytest.mark.parametrize("jobs", ["0", "two", "-1"])
def test_mini_study_refuses_a_bad_jobs_value(tmp_path: Path, jobs: str) -> None:
    proc = _bash(REPO / "examples" / "mini-study.sh", {"OUT": str(tmp_path / "s"), "JOBS": jobs},
                 tmp_path)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"mini-study: JOBS={jobs}: expected a positive whole number"
    assert not (tmp_path / "s").exists()
