"""The `lossxfer` command line: a thin layer over the library, one module per verb.

Verb modules import the library (and so torch, numpy, h5py) only inside their command
functions, so `lossxfer --help` and tab completion never load them.
"""

from lossxfer.cli.app import app, main

__all__ = ["app", "main"]
from lossxfer.cli import separation  # noqa: F401
from lossxfer.cli import info  # noqa: F401
from lossxfer.cli import report  # noqa: F401
from lossxfer.cli import train  # noqa: F401
from lossxfer.cli import extract  # noqa: F401
from lossxfer.cli import cka  # noqa: F401
from lossxfer.cli import store  # noqa: F401
from lossxfer.cli import finetune  # noqa: F401
from lossxfer.cli import probe  # noqa: F401
