"""Start-up time of `lossxfer --help` and of a tab-completion request (budget: 300 ms wall).

Both run in a fresh interpreter every time a user presses TAB or asks for help, so they must not
import torch, numpy or h5py (tests/test_shell.py checks that; this measures the time).

    python benchmarks/bench_startup.py [--runs 15] [--strict]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

BUDGET_S = 0.300
BIN = Path(sys.executable).parent


def command() -> list[str]:
    """The installed entry point when there is one (what the shell runs), else `-m lossxfer`."""
    exe = shutil.which("lossxfer", path=str(BIN)) or shutil.which("lossxfer")
    return [exe] if exe else [sys.executable, "-m", "lossxfer"]


CASES = {
    "lossxfer --help": (["--help"], {}),
    "lossxfer tr<TAB>": (
        [],
        {"_LOSSXFER_COMPLETE": "complete_bash", "COMP_WORDS": "lossxfer tr", "COMP_CWORD": "1"},
    ),
    "lossxfer train --loss co<TAB>": (
        [],
        {
            "_LOSSXFER_COMPLETE": "complete_bash",
            "COMP_WORDS": "lossxfer train --loss co",
            "COMP_CWORD": "3",
        },
    ),
}


def measure(args: list[str], env: dict[str, str], runs: int) -> tuple[list[float], list[float]]:
    """Wall and CPU (user + sys) seconds per run; CPU time barely moves with machine load."""
    walls, cpus = [], []
    for _ in range(runs + 1):  # the first run warms the page cache and is dropped
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(
            [*command(), *args], env={**os.environ, **env}, capture_output=True, check=True
        )
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return walls[1:], cpus[1:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--strict", action="store_true", help="exit 1 when over the budget")
    args = parser.parse_args()
    print(f"# {' '.join(command())}; {args.runs} runs each; budget {BUDGET_S * 1000:.0f} ms")
    print(f"# load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    over = False
    for name, (argv, env) in CASES.items():
        walls, cpus = measure(argv, env, args.runs)
        median = statistics.median(walls)
        over |= median > BUDGET_S
        print(
            f"{name:31s} wall median {median * 1000:4.0f} ms  min {min(walls) * 1000:4.0f} ms"
            f"  cpu median {statistics.median(cpus) * 1000:4.0f} ms"
            f"  {'OVER BUDGET' if median > BUDGET_S else 'ok'}"
        )
    return 1 if over and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
