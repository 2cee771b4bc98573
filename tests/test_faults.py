"""Atomicity under faults: kill -9 at many points of `train`, `extract`, `cka --shard/--merge`
and `report`, and a full disk (a small tmpfs).

Invariants: after any kill, every output under its final name is either absent or complete
(it loads, with the same content as an uninterrupted run's); a rerun (`--resume` for train,
`--force` otherwise) then ends with exactly the uninterrupted result: bit-identical weights,
identical store rows, the same CKA matrix, the same report bytes. A full disk is one clear error
line, and leaves neither a partial output nor a temporary file.

Each run is the CLI in a forked child (modules already imported: no start-up cost), on one
thread so that runs are bit-comparable. A child is killed with SIGKILL either by the parent after
a seeded random delay, or by itself at a chosen point: before or after the k-th `os.replace` (the
rename of an atomic write), at the k-th store row block, or halfway through writing a text file.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from lossxfer.checkpoint import load_checkpoint
from lossxfer.results import load_result
from lossxfer.store import open_store

SEED = 20211101
DATA = "synthetic:classes=3,size=8,train=8,test=4"  # 24 + 12 images: fast
KILLED = -signal.SIGKILL

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")


@dataclass(frozen=True)
class Kill:
    """Where a child dies: at a hook (`what`, the n-th call, before/after it) or after `delay`."""

    what: str = "delay"  # replace | write_block | write_text | delay
    n: int = 1
    after: bool = False
    delay: float = 0.0

    def __str__(self) -> str:
        if self.what == "delay":
            return f"SIGKILL after {self.delay:.3f}s"
        return f"SIGKILL {'after' if self.after else 'before'} {self.what} #{self.n}"


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install(kill: Kill) -> None:
    """In the child: make it SIGKILL itself at the chosen point."""
    calls = [0]

    def counted(fn: Callable, partial: Callable | None = None) -> Callable:
        def wrapper(*args, **kw):  # type: ignore[no-untyped-def]
            calls[0] += 1
            hit = calls[0] == kill.n
            if hit and partial is not None:
                partial(*args, **kw)
                _die()
            if hit and not kill.after:
                _die()
            out = fn(*args, **kw)
            if hit:
                _die()
            return out

        return wrapper

    if kill.what == "replace":
        os.replace = counted(os.replace)
    elif kill.what == "write_block":
        from lossxfer.store import StoreWriter

        StoreWriter.write = counted(StoreWriter.write)  # type: ignore[method-assign]
    elif kill.what == "write_text":
        real = Path.write_text

        def half(self: Path, text: str, *args, **kw) -> None:  # type: ignore[no-untyped-def]
            with open(self, "w", encoding="utf-8") as fh:
                fh.write(text[: len(text) // 2])
                fh.flush()
                os.fsync(fh.fileno())

        Path.write_text = counted(real, partial=half)  # type: ignore[method-assign]


def forked(argv: list[object], kill: Kill | None = None, timeout: float = 120) -> int:
    """Run `lossxfer ARGV` in a forked child; its exit code, or KILLED if SIGKILL ended it."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 70
        try:
            import torch

            torch.set_num_threads(1)  # forked after OpenMP use: stay out of parallel regions
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (pytest's capture)
            if kill is not None and kill.what != "delay":
                _install(kill)
            from lossxfer.cli import main

            try:
                main([str(a) for a in argv])
                code = 0
            except SystemExit as exc:
                code = int(exc.code or 0)
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    if kill is not None and kill.what == "delay":
        time.sleep(kill.delay)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"lossxfer {argv} hung (killed after {timeout}s)")
        time.sleep(0.01)
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def timed(argv: list[object]) -> float:
    started = time.monotonic()
    code = forked(argv)
    assert code == 0, f"lossxfer {argv} failed ({code})"
    return time.monotonic() - started


def plan(rng: random.Random, hooks: list[tuple[str, int]], wall: float, delays: int) -> list[Kill]:
    """Kill points: each hook at a random call number (before or after it), in order, so that
    every one lands whatever the machine's speed; then kills after random delays."""
    kills = [Kill(what, rng.randint(1, most), rng.random() < 0.5) for what, most in hooks]
    return kills + [Kill(delay=rng.uniform(0.0, wall)) for _ in range(delays)]


def tensors(path: Path) -> dict[str, np.ndarray]:
    with safe_open(str(path), framework="np") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118


def store_rows(path: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    with open_store(path) as store:
        for split in store.splits:
            out[f"{split}/labels"] = store.labels(split)
            out[f"{split}/index"] = store.index(split)
            for layer in store.layers(split):
                out[f"{split}/{layer}"] = store.read(split, layer)
    return out


def same_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def visible(folder: Path) -> set[str]:
    """Files under their final names (temporary files are hidden `.NAME.*.tmp`)."""
    return {p.name for p in folder.iterdir() if not p.name.startswith(".")}


# ---------------------------------------------------------------------------------------------
# kill -9


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("faults") / "run"
    timed(["train", "--data", DATA, "--epochs", 1, "--batch-size", 4, "-o", run, "-q",
           "--device", "cpu"])  # fmt: skip
    return run / "model.safetensors"


@pytest.mark.slow
def test_train_killed_anywhere_resumes_to_identical_weights(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    args = ["--data", DATA, "--epochs", 3, "--batch-size", 4, "--seed", 5, "-q", "--device", "cpu"]
    wall = timed(["train", *args, "-o", tmp_path / "base"])
    base = tmp_path / "base"
    reference = tensors(base / "model.safetensors")
    # Renames: the state at each of 3 epoch ends, then the model and train.json (5). Each run
    # resumes where the last one died, so kills at renames 1-2 land until the last two; the
    # write of train.json comes in every run that gets to the end. Kills after short delays
    # land in start-up (imports, data, before the first state).
    kills = plan(rng, [("replace", 2)] * 2 + [("write_text", 1)], wall / 2, delays=2)
    kills += [Kill("replace", 1, after=True), Kill(delay=0.0), Kill(delay=0.05)]
    run = tmp_path / "run"
    injected = 0
    for kill in [*kills, None]:
        # The same command line every time: --resume starts, continues or finds it done. A
        # delay that did not land (a resumed run is shorter than the timed one) can finish the
        # run early; after that no hook fires, and the run must stay complete and unchanged.
        finished_before = (run / "train.json").exists()
        code = forked(["train", *args, "-o", run, "--resume"], kill)
        if kill is None:
            assert code == 0
        elif code == KILLED:
            injected += 1
        else:
            assert kill.what == "delay" or finished_before, f"{kill} did not land (exit {code})"
        # A model file means a finished run: whatever exists under it is the final model.
        if (run / "model.safetensors").exists():
            load_checkpoint(run / "model.safetensors")
            assert same_arrays(tensors(run / "model.safetensors"), reference), kill
        if (run / "state.safetensors").exists():
            assert "position/step" in tensors(run / "state.safetensors")
        if (run / "train.json").exists():
            assert (run / "model.safetensors").exists()  # the record comes last
            assert (
                load_result(run / "train.json").metrics == load_result(base / "train.json").metrics
            )
        assert visible(run) <= {"model.safetensors", "state.safetensors", "train.json"}
    assert injected >= 3, f"only {injected} of {len(kills)} kills landed"  # the hooks
    assert visible(run) == {"model.safetensors", "train.json"}  # finished: no state left
    assert same_arrays(tensors(run / "model.safetensors"), reference)
    done, ref = load_result(run / "train.json"), load_result(base / "train.json")
    assert done.metrics == ref.metrics
    # Complete: the same command line again is a no-op that succeeds.
    mtime = (run / "model.safetensors").stat().st_mtime_ns
    assert forked(["train", *args, "-o", run, "--resume"]) == 0
    assert (run / "model.safetensors").stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_finetune_killed_anywhere_resumes_to_identical_result(ckpt: Path, tmp_path: Path) -> None:
    """The same `finetune … --resume` line after every kill: no model or record until the run
    is complete, and then exactly the uninterrupted run's."""
    rng = random.Random(SEED + 4)
    args = [ckpt, "--data", DATA, "--lr", "0.05,0.01", "--weight-decay", "0", "--epochs", 2,
            "--batch-size", 4, "--seed", 2, "-q", "--device", "cpu"]  # fmt: skip
    base = tmp_path / "base"
    wall = timed(["finetune", *args, "-o", base])
    reference = tensors(base / "model.safetensors")
    # Renames of a whole run: 2 states per cell and the grid after each (6), the refit's 2
    # states, the model and finetune.json (10); grid.state and the record are text writes.
    kills = plan(rng, [("replace", 3)] * 3 + [("write_text", 2)], wall / 2, delays=2)
    kills += [Kill("replace", 1, after=True), Kill(delay=0.0)]
    run = tmp_path / "run"
    injected = 0
    for kill in [*kills, None]:
        code = forked(["finetune", *args, "-o", run, "--resume"], kill)
        if kill is None:
            assert code == 0
        elif code == KILLED:
            injected += 1
        else:
            assert kill.what == "delay", f"{kill} did not land (exit {code})"
        if (run / "model.safetensors").exists():
            assert same_arrays(tensors(run / "model.safetensors"), reference), kill
        if (run / "finetune.json").exists():
            assert (run / "model.safetensors").exists()  # the record comes last
        assert (
            visible(run) <= {"cells", "model.safetensors", "finetune.json"}
            if run.exists()
            else True
        )
    assert injected >= 4, f"only {injected} of {len(kills)} kills landed"
    assert visible(run) == {"model.safetensors", "finetune.json"}  # finished: cells/ removed
    assert same_arrays(tensors(run / "model.safetensors"), reference)
    done, ref = load_result(run / "finetune.json"), load_result(base / "finetune.json")
    assert done.metrics == ref.metrics


@pytest.mark.slow
def test_extract_killed_anywhere_leaves_no_partial_store(ckpt: Path, tmp_path: Path) -> None:
    rng = random.Random(SEED + 1)
    args = [ckpt, "--data", DATA, "--split", "train,test", "--layers", "all", "--batch-size", 2,
            "--workers", 0, "-q", "--device", "cpu"]  # fmt: skip
    base = tmp_path / "base.h5"
    wall = timed(["extract", *args, "-o", base])
    reference = store_rows(base)
    blocks = (24 + 12) // 2
    kills = plan(rng, [("write_block", blocks), ("write_block", blocks), ("replace", 1)], wall, 3)
    kills.append(Kill("replace", 1, after=True))
    out = tmp_path / "out" / "acts.h5"
    out.parent.mkdir()
    injected = 0
    for kill in kills:
        code = forked(["extract", *args, "-o", out, "--force"], kill)
        injected += code == KILLED
        assert code == KILLED or kill.what == "delay", f"{kill} did not land (exit {code})"
        if out.exists():  # only ever complete
            assert same_arrays(store_rows(out), reference), kill
        assert visible(out.parent) <= {"acts.h5"}
    assert injected >= 4  # the hooks; a delay may come after the end
    assert forked(["extract", *args, "-o", out, "--force"]) == 0
    assert same_arrays(store_rows(out), reference)
    leftovers = [p for p in out.parent.iterdir() if p.name.startswith(".")]
    assert all(p.name.startswith(".acts.h5.") and p.suffix == ".tmp" for p in leftovers)


@pytest.fixture(scope="module")
def acts(ckpt: Path) -> Path:
    out = ckpt.parent / "acts.h5"
    assert forked(["extract", ckpt, "--data", DATA, "-o", out, "-q", "--workers", 0,
                   "--device", "cpu"]) == 0  # fmt: skip
    return out


@pytest.mark.parametrize("suffix", [".h5", ".json"])
def test_cka_shards_and_merge_killed_anywhere(acts: Path, tmp_path: Path, suffix: str) -> None:
    rng = random.Random(SEED + 2)
    cka = ["--backend", "numpy", "-q"]
    parts = [tmp_path / f"part{i}{suffix}" for i in range(2)]
    for i, part in enumerate(parts):
        # a shard write killed before/after its rename, then rerun
        kill = Kill("replace", 1, after=bool(i))
        assert forked(["cka", acts, "--shard", f"{i}/2", "-o", part, *cka], kill) == KILLED
        assert not part.exists() or part.stat().st_size > 0
        # killed in start-up or at a random moment: never a partial part under its name
        for kill in (Kill(delay=0.0), Kill(delay=rng.uniform(0.0, 1.0))):
            forked(["cka", acts, "--shard", f"{i}/2", "-o", part, "--force", *cka], kill)
            assert visible(tmp_path) <= {p.name for p in parts} | {"out"}
        assert forked(["cka", acts, "--shard", f"{i}/2", "-o", part, "--force", *cka]) == 0
    base = tmp_path / "base.json"
    wall = timed(["cka", "--merge", *parts, "-o", base, "-q"])
    reference = load_result(base).metrics["matrix"]
    out = tmp_path / "out" / "cka.json"
    out.parent.mkdir()
    kills = [Kill("write_text", 1), Kill("replace", 1), Kill("replace", 1, after=True)]
    kills += [Kill(delay=rng.uniform(0, wall)) for _ in range(2)]
    for kill in kills:
        forked(["cka", "--merge", *parts, "-o", out, "--force", "-q"], kill)
        if out.exists():
            assert load_result(out).metrics["matrix"] == reference, kill
        assert visible(out.parent) <= {"cka.json"}
    assert forked(["cka", "--merge", *parts, "-o", out, "--force", "-q"]) == 0
    assert load_result(out).metrics["matrix"] == reference


def test_report_killed_anywhere(acts: Path, ckpt: Path, tmp_path: Path) -> None:
    records = tmp_path / "records"
    records.mkdir()
    shutil.copy(ckpt.parent / "train.json", records / "train.json")
    assert forked(["separation", acts, "-o", records / "sep.json", "-q"]) == 0
    base = tmp_path / "base.md"
    wall = timed(["report", records, "-o", base, "-q"])
    out = tmp_path / "out" / "table.md"
    out.parent.mkdir()
    rng = random.Random(SEED + 3)
    kills = [Kill("write_text", 1), Kill("replace", 1), Kill("replace", 1, after=True)]
    kills += [Kill(delay=rng.uniform(0, wall)) for _ in range(2)]
    for kill in kills:
        forked(["report", records, "-o", out, "--force", "-q"], kill)
        if out.exists():
            assert out.read_bytes() == base.read_bytes(), kill
        assert visible(out.parent) <= {"table.md"}
    assert forked(["report", records, "-o", out, "--force", "-q"]) == 0
    assert out.read_bytes() == base.read_bytes()


@pytest.mark.slow
def test_train_subprocess_kill9_then_resume(tmp_path: Path) -> None:
    """The real thing once: `python -m lossxfer train` SIGKILLed by the parent mid-training."""
    # Enough epochs that an idle machine cannot finish them in the moment after epoch 2.
    args = ["train", "--data", DATA, "--epochs", 40, "--batch-size", 2, "--seed", 1,
            "--device", "cpu"]  # fmt: skip
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lossxfer", *map(str, args), "-o", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # wait for the end of epoch 2, then a little more
        if "epoch 2/40" in line:
            break
    time.sleep(random.Random(SEED).uniform(0.0, 0.02))
    proc.kill()
    proc.wait()
    assert (run / "state.safetensors").exists()
    assert not (run / "model.safetensors").exists() and not (run / "train.json").exists()
    resumed = subprocess.run(
        [sys.executable, "-m", "lossxfer", *map(str, args), "-o", str(run), "--resume", "-q"],
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    record = json.loads((run / "train.json").read_text())
    assert record["metrics"]["epochs"] == 40 and len(record["metrics"]["loss_curve"]) == 40


# ---------------------------------------------------------------------------------------------
# A full disk


@contextlib.contextmanager
def small_disk(folder: Path, size: str, fill: bool = False) -> Iterator[Path]:
    """A tmpfs of `size` mounted on `folder` (optionally filled up); skipped where not root."""
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs ({mounted.stderr.decode().strip()}): needs root")
    try:
        if fill:
            fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * 4096):
                    pass
            os.close(fd)
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def full_disk_error(cli, argv: list[object], out: Path) -> str:  # type: ignore[no-untyped-def]
    run = cli(*argv)
    assert run.code != 0
    lines = run.stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("lossxfer: error:")]
    assert len(errors) == 1 and len(lines) == 1, run.stderr
    assert "no space left on device" in errors[0] and "internal error" not in errors[0]
    assert out.name in errors[0]
    assert not out.exists()
    stray = [p.name for p in out.parent.iterdir() if p.name.startswith(".")]
    assert not stray, stray
    return errors[0]


def test_full_disk_train(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with small_disk(tmp_path / "fs", "1m") as fs:
        run = fs / "run"
        argv = ["train", "--data", DATA, "--epochs", 1, "-o", run, "-q", "--device", "cpu"]
        full_disk_error(cli, argv, run / "state.safetensors")
        assert not (run / "model.safetensors").exists() and not (run / "train.json").exists()


def test_full_disk_extract(cli, ckpt: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with small_disk(tmp_path / "fs", "256k", fill=True) as fs:
        out = fs / "acts.h5"
        argv = ["extract", ckpt, "--data", DATA, "-o", out, "--workers", 0, "-q", "--device", "cpu"]
        full_disk_error(cli, argv, out)


def test_full_disk_extract_compressed_in_a_child(ckpt: Path, tmp_path: Path) -> None:
    """Compressed: no size estimate up front, so HDF5 itself meets the full disk."""
    with small_disk(tmp_path / "fs", "64k") as fs:
        out = fs / "acts.h5"
        argv = ["extract", ckpt, "--data", DATA, "-o", out, "--workers", 0, "--device", "cpu",
                "--compression", "gzip", "--layers", "all", "--pool", "flatten", "-q"]  # fmt: skip
        code = forked(argv)
        assert code not in (0, KILLED) and code > 0, code  # an error exit, not a crash
        assert not out.exists()
        assert not [p for p in fs.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("verb", ["report", "cka", "separation", "store_merge"])
def test_full_disk_small_outputs(cli, acts: Path, ckpt: Path, tmp_path: Path, verb: str) -> None:  # type: ignore[no-untyped-def]
    parts = []
    if verb == "store_merge":
        for i in range(2):
            parts.append(tmp_path / f"p{i}.h5")
            assert forked(["extract", ckpt, "--data", DATA, "-o", parts[-1], "--shard", f"{i}/2",
                           "-q", "--workers", 0, "--device", "cpu"]) == 0  # fmt: skip
    with small_disk(tmp_path / "fs", "64k", fill=True) as fs:
        out = fs / ("merged.h5" if verb == "store_merge" else "out.json")
        argv = {
            "report": ["report", ckpt.parent / "train.json", "-o", out],
            "cka": ["cka", acts, "-o", out, "--backend", "numpy", "-q"],
            "separation": ["separation", acts, "-o", out, "-q"],
            "store_merge": ["store", "merge", *parts, "-o", out, "-q"],
        }[verb]
        full_disk_error(cli, argv, out)


# ---------------------------------------------------------------------------------------------
# The mini study, interrupted and rerun


def study_outputs(out: Path) -> dict[str, object]:
    """Everything the study made, as comparable values (weights, store rows, record metrics)."""
    found: dict[str, object] = {}
    for path in sorted((out / "runs").rglob("*")):
        name = str(path.relative_to(out))
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix == ".safetensors" and path.name == "model.safetensors":
            found[name] = tensors(path)
        elif path.suffix == ".h5":
            found[name] = store_rows(path)
        elif path.suffix == ".json":
            metrics = load_result(path).metrics
            found[name] = {k: v for k, v in metrics.items() if "time" not in k}
        else:
            found[name] = path.name  # state files: compared by presence only
    return found


def same_output(a: object, b: object) -> bool:
    if isinstance(a, dict) and a and isinstance(next(iter(a.values())), np.ndarray):
        return same_arrays(a, b)  # type: ignore[arg-type]
    return a == b


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_mini_study_interrupted_anywhere_then_rerun_equals_uninterrupted(tmp_path: Path) -> None:
    """Ctrl-C, SIGTERM (preemption) or SIGKILL to the whole study at random moments, then the
    same command again: nothing partial is ever accepted, and the end is the uninterrupted
    study's (weights, stores, records, the printed table)."""
    script = Path(__file__).parent.parent / "examples" / "mini-study.sh"
    env = {**os.environ, "OBJECTIVES": "softmax", "EPOCHS": "1", "SEEDS": "1",
           "LOSSXFER": f"{sys.executable} -m lossxfer", "OMP_NUM_THREADS": "1"}  # fmt: skip

    def study(out: Path) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["bash", str(script)],
            env={**env, "OUT": str(out)},
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,  # its own process group: a signal reaches every step
        )

    started = time.monotonic()
    base = study(tmp_path / "base")
    base_stdout, _ = base.communicate(timeout=900)
    assert base.returncode == 0
    wall = time.monotonic() - started
    reference = study_outputs(tmp_path / "base")

    rng = random.Random(SEED + 5)
    cut = tmp_path / "cut"
    interrupted = 0
    # Each rerun has less left to do: shrinking delays, the last one in start-up.
    for signum, at in zip(
        (signal.SIGINT, signal.SIGTERM, signal.SIGKILL, signal.SIGTERM),
        (0.35, 0.15, 0.05, 0.01),
        strict=True,
    ):
        proc = study(cut)
        time.sleep(rng.uniform(0.8, 1.2) * at * wall)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)
        proc.communicate(timeout=300)
        interrupted += proc.returncode != 0
        # No consumer ever sees a partial result: whatever exists under a final name is the
        # uninterrupted study's (a model file only once its training finished).
        for name, value in study_outputs(cut).items():
            if name.endswith("state.safetensors"):
                continue
            assert same_output(value, reference[name]), (signal.Signals(signum).name, name)
    assert interrupted >= 3, f"only {interrupted} of 4 signals interrupted the study"
    again = study(cut)
    stdout, _ = again.communicate(timeout=900)
    assert again.returncode == 0
    done = study_outputs(cut)
    assert done.keys() == reference.keys()
    assert all(same_output(done[k], reference[k]) for k in done), [
        k for k in done if not same_output(done[k], reference[k])
    ]
    assert stdout.replace(str(cut), "OUT") == base_stdout.replace(str(tmp_path / "base"), "OUT")
