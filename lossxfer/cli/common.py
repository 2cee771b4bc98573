"""Options shared by every verb (one definition each) and the verbs' output helpers.

stdout carries data only (a table, or exactly one JSON document with --json); progress and logs
go to stderr: a Rich bar on a terminal, plain log lines otherwise (SLURM logs), nothing with -q.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from lossxfer.cli.completion import complete_path
from lossxfer.cli.completion import parse_list as parse_list  # noqa: PLC0414  (for the verbs)

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from lossxfer.data import DataSpec
    from lossxfer.distributed import Dist
    from lossxfer.progress import ProgressFn
    from lossxfer.results import Result


DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device",
        help="Where to compute: auto (CUDA if present), cpu, cuda or cuda:N.",
    ),
]


StoreArg = Annotated[
    Path,
    typer.Argument(
        help="Activation store (.h5) written by `lossxfer extract`.",
        autocompletion=complete_path(".h5"),
    ),
]
LayerOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--layer",
        help="Layer(s) to use: repeat or comma-separate; `all` for every stored layer.",
    ),
]
SplitOpt = Annotated[
    str | None,
    typer.Option("--split", help="Store split to read: train, val or test."),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed (runs are repeatable).")]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print exactly one JSON document on stdout, nothing else.")
]
QuietOpt = Annotated[
    bool,
    typer.Option(
        "-q",
        "--quiet",
        help="Errors only, and the output asked for (--json, -o -, report's tables): no "
        "progress, logs or result summary.",
    ),
]
OutOpt = Annotated[
    Path | None,
    typer.Option("-o", "--out", metavar="FILE", help="Write the result here.", dir_okay=False),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite existing outputs.")]
DebugOpt = Annotated[
    bool, typer.Option("--debug", help="Show debug logs and full tracebacks on errors.")
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        "--threads",
        help="CPU threads for torch (0: one per core). Default: from the model's cost per "
        "image: 1 below 300 MFLOP (smallcnn, 8 px ResNets), where more threads only slow "
        "cheap convolutions down, else one per core; OMP_NUM_THREADS, when set, is respected.",
        show_default=False,
    ),
]


def cpu_threads_option(threads: int | None) -> int | None:
    """--threads, or 0 (torch's default, which reads OMP_NUM_THREADS) when that is set."""
    if threads is None and os.environ.get("OMP_NUM_THREADS"):
        return 0
    return threads


LOG = logging.getLogger("lossxfer")


class Output:
    """One verb's view of the terminal: logging, progress and the final data on stdout."""

    def __init__(self, json: bool = False, quiet: bool = False, debug: bool = False) -> None:
        self.json = json
        self.quiet = quiet
        self.debug = debug
        self.stderr_tty = sys.stderr.isatty()
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._last_log: dict[str, float] = {}
        setup_logging(quiet=quiet, debug=debug)

    # -- progress -----------------------------------------------------------------------------
    def progress(self, description: str, done: int, total: int | None) -> None:
        """The library's progress callback: Rich bar on a terminal, log lines otherwise."""
        if self.quiet:
            return
        if self.stderr_tty:
            bar = self._bar()
            if description not in self._tasks:
                self._tasks[description] = bar.add_task(description, total=total)
            bar.update(self._tasks[description], completed=done, total=total)
            return
        now = time.monotonic()
        finished = total is not None and done >= total
        if finished or now - self._last_log.get(description, 0.0) >= 10.0:
            self._last_log[description] = now
            of = f"/{total}" if total is not None else ""
            LOG.info("%s: %d%s", description, done, of)

    def _bar(self) -> Progress:
        if self._progress is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=stderr_console(),
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._progress.start()
        return self._progress

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._tasks.clear()

    def __enter__(self) -> Output:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- data on stdout -----------------------------------------------------------------------
    def emit(self, result: Result, render: Callable[[Result], Any] | None = None) -> None:
        """Print the result: one JSON document with --json, else what `render` returns (not
        with -q: the table is not asked for explicitly, --json is)."""
        self.close()
        if self.debug:  # what was actually used: the record's resolved configuration
            from lossxfer.results import dumps

            LOG.debug("configuration: %s", dumps(result.config, indent=None))
            LOG.debug("timing: %s", dumps(result.timing, indent=None))
        if self.json:
            sys.stdout.write(result.to_json() + "\n")
            sys.stdout.flush()
            return
        if render is not None:
            self.print(render(result))

    def print(self, renderable: Any) -> None:
        """A table or text (printed as is, not as markup) for the reader on stdout; nothing
        with -q."""
        self.close()
        if self.quiet:
            return
        if isinstance(renderable, str):
            from rich.text import Text

            renderable = Text(renderable)
        stdout_console().print(renderable)

    def emit_json(self, document: Any) -> None:
        from lossxfer.results import dumps

        self.close()
        sys.stdout.write(dumps(document) + "\n")
        sys.stdout.flush()


def stdout_console() -> Console:
    from rich.console import Console

    return Console(soft_wrap=True, highlight=False)


@functools.cache
def stderr_console() -> Console:
    """The one console on stderr: the progress bar and the log handler both draw through it, so
    Rich prints log lines above a live bar instead of into it."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def setup_logging(quiet: bool = False, debug: bool = False) -> None:
    """Logs to stderr: Rich on a terminal, `time lossxfer LEVEL message` lines elsewhere."""
    level = logging.ERROR if quiet else logging.DEBUG if debug else logging.INFO
    LOG.setLevel(level)
    LOG.propagate = False
    for old in list(LOG.handlers):
        LOG.removeHandler(old)
    handler: logging.Handler
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(console=stderr_console(), show_path=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s lossxfer %(levelname)s %(message)s", "%H:%M:%S")
        )
    LOG.addHandler(handler)


def run_on_ranks(
    device: str,
    output: tuple[bool, bool, bool],
    work: Callable[[ProgressFn | None, Dist], Result],
    render: Callable[[Result], Any],
) -> None:
    """Run a training verb as one process or as one rank of a torchrun launch.

    The launch is read from torchrun's RANK/WORLD_SIZE/LOCAL_RANK here, in the CLI; only rank
    0 prints (the library sees that only rank 0 writes). `output` is (json, quiet, debug).
    """
    from lossxfer.distributed import DistContext, session

    json_, quiet, debug = output
    launch = DistContext.from_env(os.environ)
    launch.check_device(device)
    main = launch.is_main
    with Output(json_ and main, quiet or not main, debug) as ui, session(launch, device) as dist:
        # A bar per epoch on a terminal; elsewhere the library's one log line per epoch.
        result = work(ui.progress if ui.stderr_tty and main else None, dist)
        if main:
            ui.emit(result, render=render)


def data_spec(text: str, check_folder: bool = False) -> DataSpec:
    """Parse `--data`; a dataset named without a folder is looked for in $LOSSXFER_DATA_ROOT/NAME.

    Here, not in the library, because only the CLI reads the environment. `check_folder`: a
    missing dataset folder is an input error now (exit 3), before torch is imported."""
    import os

    from lossxfer.data import DataSpec
    from lossxfer.errors import InputError

    spec = DataSpec.parse(text, default_root=os.environ.get("LOSSXFER_DATA_ROOT"))
    if check_folder and spec.root is not None and not os.path.exists(spec.root):
        raise InputError(f"--data {text}: no such file or folder {spec.root}")
    return spec
