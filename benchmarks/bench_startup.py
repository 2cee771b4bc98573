"""Start-up cost of the CLI: help, completion, errors per verb, `info`, and the first training step.

Every case runs `lossxfer` in a fresh interpreter, as a shell, a script or a job array does, next
to two references: `python -c pass` (the interpreter) and `python -c 'import torch'` (what a
verb that computes pays at least). Budgets (wall, median): help and completion 0.3 s, `info`
0.3 s, usage and input errors 0.5 s. The first training step on digits is measured by a global
optimizer hook that stops the process at the first `step()`.

    python benchmarks/bench_startup.py [--runs 5] [--strict]
    python benchmarks/bench_startup.py --pythonpath OLD_CHECKOUT   # the same cases, other code

With --pythonpath the cases run `python -m lossxfer` from that checkout (e.g. an older commit
unpacked with `git archive COMMIT | tar -x -C DIR`), for before/after figures.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HELP_BUDGET, INFO_BUDGET, ERROR_BUDGET = 0.3, 0.3, 0.5
BIN = Path(sys.executable).parent
# Stop at the first optimizer step and say when (time.time(), comparable across processes).
FIRST_STEP = (
    "import os, sys, time\n"
    "import torch.optim.optimizer as o\n"
    "def stop(*args):\n"
    "    sys.stderr.write(f'FIRST-STEP {time.time()}\\n'); sys.stderr.flush(); os._exit(0)\n"
    "o.register_optimizer_step_post_hook(stop)\n"
    "from lossxfer.cli import main\n"
    "main(sys.argv[1:])\n"
)


def command(pythonpath: str | None) -> list[str]:
    """The installed entry point (what the shell runs), or `python -m lossxfer` for --pythonpath."""
    exe = None if pythonpath else shutil.which("lossxfer", path=str(BIN))
    return [exe] if exe else [sys.executable, "-m", "lossxfer"]


def complete(words: str) -> dict[str, str]:
    cword = str(len(words.split(" ")) - 1)
    return {"_LOSSXFER_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": cword}


def cases(d: Path) -> list[tuple[str, list[str], dict[str, str], int, float]]:
    """(name, argv, env, expected exit code, budget) for every case; files live in `d`."""
    run, out = d / "run", d / "out"
    ckpt, store, record = run / "model.safetensors", d / "acts.h5", d / "sep.json"
    missing = d / "missing"
    usage = {  # one typo per verb, each caught before any heavy import
        "train": ["train", "--data", "digits", "-o", out, "--loss", "sofmax"],
        "finetune": ["finetune", ckpt, "--data", "digits", "-o", out, "--loss", "sofmax"],
        "extract": ["extract", ckpt, "--data", "digits", "-o", out / "a.h5", "--pool", "mx"],
        "probe": ["probe", store, "--method", "linaer"],
        "separation": ["separation", store, "--split", "tset"],
        "cka": ["cka", store, "--estimator", "linaer"],
        "report": ["report", d, "--table", "sumary"],
        "info": ["info", "--frobnicate"],
        "objectives": ["objectives", "--frobnicate"],
    }
    absent = {  # a missing or wrong input file
        "train": ["train", "--data", f"imagefolder:{missing}", "-o", out],
        "finetune": ["finetune", missing / "model.safetensors", "--data", "digits", "-o", out],
        "extract": ["extract", run, "--data", "digits", "-o", out / "a.h5"],
        "probe": ["probe", ckpt],
        "separation": ["separation", missing / "acts.h5"],
        "cka": ["cka", store, missing / "b.h5"],
        "report": ["report", missing],
        "info": ["info", missing / "model.safetensors"],
    }
    out_cases = [
        ("--help", ["--help"], {}, 0, HELP_BUDGET),
        ("tr<TAB>", [], complete("lossxfer tr"), 0, HELP_BUDGET),
        ("train --loss co<TAB>", [], complete("lossxfer train --loss co"), 0, HELP_BUDGET),
        ("info checkpoint", ["info", ckpt], {}, 0, INFO_BUDGET),
        ("info store", ["info", store], {}, 0, INFO_BUDGET),
        ("info record", ["info", record], {}, 0, INFO_BUDGET),
    ]
    out_cases += [(f"{v} usage error", a, {}, 2, ERROR_BUDGET) for v, a in usage.items()]
    out_cases += [(f"{v} input error", a, {}, 3, ERROR_BUDGET) for v, a in absent.items()]
    return [(n, [str(x) for x in a], e, c, b) for n, a, e, c, b in out_cases]


def measure(argv: list[str], env: dict[str, str], runs: int) -> tuple[float, float, int, str]:
    """Median wall and CPU (user + sys) seconds (CPU time barely moves with machine load), the
    exit code and the last line of stderr."""
    walls, cpus = [], []
    for i in range(runs + 1):  # the first run warms the page cache and is dropped
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if i:
            walls.append(wall)
            cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    last = (proc.stderr.strip().splitlines() or [""])[-1]
    return statistics.median(walls), statistics.median(cpus), proc.returncode, last


def first_step(env: dict[str, str], out: Path, runs: int) -> float:
    """Median seconds from launch to the end of the first training step on digits."""
    times = []
    for i in range(runs + 1):
        shutil.rmtree(out, ignore_errors=True)
        argv = [sys.executable, "-c", FIRST_STEP, "train", "--data", "digits", "--classes",
                "0-4", "--epochs", "1", "-o", str(out)]  # fmt: skip
        start = time.time()
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        line = next((x for x in proc.stderr.splitlines() if x.startswith("FIRST-STEP")), None)
        if line is None:
            raise SystemExit(f"no training step: {proc.stderr}")
        if i:
            times.append(float(line.split()[1]) - start)
    return statistics.median(times)


def prepare(d: Path, env: dict[str, str], lx: list[str]) -> None:
    """A trained run, its activation store and a separation record to look at."""
    ckpt = d / "run" / "model.safetensors"
    steps = [
        ["train", "--data", "digits", "--classes", "0-4", "--epochs", "1", "-o", d / "run", "-q"],
        ["extract", ckpt, "--data", "digits", "--split", "test", "-o", d / "acts.h5", "-q"],
        ["separation", d / "acts.h5", "-o", d / "sep.json", "-q"],
    ]
    for step in steps:
        subprocess.run([*lx, *map(str, step)], env=env, check=True, capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--strict", action="store_true", help="exit 1 when over a budget")
    parser.add_argument("--pythonpath", help="run the lossxfer of this checkout instead")
    parser.add_argument("--messages", action="store_true", help="show each error message")
    parser.add_argument("--first-step", action="store_true", help="only the first training step")
    args = parser.parse_args()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    if args.pythonpath:
        env["PYTHONPATH"] = str(Path(args.pythonpath).resolve())
    env.pop("LOSSXFER_DEBUG", None)
    lx = command(args.pythonpath)
    print(f"# {' '.join(lx)} (PYTHONPATH={env.get('PYTHONPATH', '')}); median of {args.runs}")
    print(f"# load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'case':28s} {'wall':>8s} {'cpu':>8s} {'budget':>7s}")
    over = False
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        os.chdir(d)  # `python -m lossxfer` puts the working directory first on sys.path
        for name, argv in (("python -c pass", ["-c", "pass"]),
                           ("python -c 'import torch'", ["-c", "import torch"])):  # fmt: skip
            wall, cpu, _, _ = measure([sys.executable, *argv], env, args.runs)
            print(f"{name:28s} {wall:7.2f}s {cpu:7.2f}s {'':>7s}")
        if not args.first_step:
            prepare(d, env, lx)
        for name, argv, extra, code, budget in [] if args.first_step else cases(d):
            wall, cpu, got, last = measure([*lx, *argv], {**env, **extra}, args.runs)
            verdict = "ok" if wall <= budget else "OVER"
            over |= wall > budget or got != code
            if got != code:
                verdict += f" exit {got}, expected {code}: {last[:70]}"
            elif args.messages and code:
                verdict += f"  {last[:90]}"
            print(f"{name:28s} {wall:7.2f}s {cpu:7.2f}s {budget:6.1f}s {verdict}")
        step = first_step(env, d / "first", args.runs)
        print(f"{'train: first step (digits)':28s} {step:7.2f}s")
    return 1 if over and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
