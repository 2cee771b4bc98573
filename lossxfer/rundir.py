"""The run directory of `train` and `finetune`: a finished result, or resumable state.

The model and the result record are written only when a run has completed (the record last);
everything an interrupted or preempted run keeps is its state (a file for `train`, a folder for
`finetune`), removed once the outputs are in place. So a model file always means a finished run,
and the same command line with `--resume` can be rerun until the work is done
(docs/formats.md "Run directory").
"""

from __future__ import annotations

import enum
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lossxfer.errors import UsageError
from lossxfer.fsio import check_output

LOG = logging.getLogger("lossxfer")


class Start(enum.IntEnum):
    """What a run does with its directory (an int, so that ranks can agree on it)."""

    FRESH = 0  # train from the beginning
    CONTINUE = 1  # continue from the saved state
    DONE = 2  # the outputs are complete: nothing to train


@dataclass(frozen=True)
class RunDir:
    folder: Path
    model: Path
    record: Path
    state: Path  # what --resume continues from: a file or a folder

    @classmethod
    def of(cls, out: str | Path, record: str, state: str) -> RunDir:
        folder = Path(out)
        return cls(folder, folder / "model.safetensors", folder / record, folder / state)

    def complete(self) -> bool:
        """Both outputs under their final names: the run finished (the record comes last)."""
        return self.model.is_file() and self.record.is_file()

    def start(self, resume: bool, force: bool) -> Start:
        """Before any work: decide how to start, refusing to clobber a run unless told how.

        --resume is idempotent: complete → DONE, state → CONTINUE, nothing → FRESH (logged).
        Without it, existing outputs or state need --force (which starts over).
        """
        if self.folder.exists() and not self.folder.is_dir():
            raise UsageError(f"{self.folder}: exists and is not a directory")
        if resume:
            if self.complete():
                return Start.DONE
            return Start.CONTINUE if self.state.exists() else Start.FRESH
        for output in (self.model, self.record):
            check_output(output, force)
        if self.state.exists() and not force:
            raise UsageError(
                f"{self.state}: exists (use --resume to continue, --force to start over)"
            )
        return Start.FRESH

    def begin(self, resume: bool, force: bool) -> Start:
        """`start`, saying on the log what --resume found."""
        start = self.start(resume, force)
        if resume and start is Start.FRESH:
            LOG.info("%s: no saved state to resume from; starting from scratch", self.state)
        return start

    def done(self) -> None:
        LOG.info("%s: already complete; nothing to train (--force trains again)", self.folder)

    def clear(self) -> None:
        """Before a fresh start: remove a previous run's files, record first, so that a kill
        part-way never leaves an old record beside a new state (it would read as complete)."""
        self.record.unlink(missing_ok=True)
        self.model.unlink(missing_ok=True)
        self.clear_state()

    def clear_state(self) -> None:
        """Remove the state of a finished run."""
        if self.state.is_dir():
            shutil.rmtree(self.state)
        else:
            self.state.unlink(missing_ok=True)


def train_dir(out: str | Path) -> RunDir:
    """`train`: model.safetensors and train.json when finished; state.safetensors until then."""
    return RunDir.of(out, "train.json", "state.safetensors")


def finetune_dir(out: str | Path) -> RunDir:
    """`finetune`: model.safetensors and finetune.json when finished; cells/ until then."""
    return RunDir.of(out, "finetune.json", "cells")


def differences(saved: Mapping[str, Any], now: Mapping[str, Any], prefix: str = "") -> list[str]:
    """'key: saved A, now B' for every differing leaf of two JSON-like dicts (keys dotted)."""
    out: list[str] = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key), now.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: saved {_show(a)}, now {_show(b)}")
    return out


def check_same(source: object, saved: Mapping[str, Any], now: Mapping[str, Any]) -> None:
    """--resume must continue the same configuration: name only what differs (exit 2)."""
    diff = differences(saved, now)
    if diff:
        raise UsageError(
            f"{source}: --resume with a different configuration ({'; '.join(diff)}); "
            "use the same options, or --force to start over"
        )


def _show(value: Any) -> str:
    return "(unset)" if value is None else repr(value) if isinstance(value, str) else str(value)
