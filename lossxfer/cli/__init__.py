"""The `lossxfer` command line: a thin layer over the library, one module per verb.

Verb modules import the library (and so torch, numpy, h5py) only inside their command
functions, so `lossxfer --help` and tab completion never load them. Importing a verb module
registers its command. A run imports only the module of the verb it names (`lossxfer info F`
builds one command, not eleven: start-up is Typer reading every parameter of every verb);
help, completion and an unknown verb import them all (`load()`: the whole Typer app, for
documentation and tests), listed in the order of a study.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

# verb → the module under lossxfer.cli that registers it, in the order `--help` lists them
VERBS = {
    "train": "train",
    "import": "zoo",
    "objectives": "objectives",
    "finetune": "finetune",
    "extract": "extract",
    "probe": "probe",
    "separation": "separation",
    "cka": "cka",
    "report": "report",
    "info": "info",
    "store": "store",
}


def load(verb: str | None = None) -> Any:
    """Register `verb`'s command, or every verb's when `verb` is None or unknown; the app."""
    from lossxfer.cli.app import app

    modules = [VERBS[verb]] if verb in VERBS else list(dict.fromkeys(VERBS.values()))
    for module in modules:
        importlib.import_module(f"lossxfer.cli.{module}")
    order = list(VERBS)
    app.registered_commands.sort(
        key=lambda c: order.index(c.name or c.callback.__name__)  # type: ignore[union-attr]
    )
    return app


def main(argv: list[str] | None = None) -> None:
    """The `lossxfer` entry point (see lossxfer.cli.app.main)."""
    from lossxfer.cli.app import main as run
    from lossxfer.cli.completion import COMPLETE_VAR

    args = sys.argv[1:] if argv is None else argv
    verb = args[0] if args and COMPLETE_VAR not in os.environ else None  # root options: all
    load(verb)
    run(args)


__all__ = ["VERBS", "load", "main"]
