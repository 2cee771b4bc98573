"""The `lossxfer` command line: a thin layer over the library, one module per verb.

Verb modules import the library (and so torch, numpy, h5py) only inside their command
functions, so `lossxfer --help` and tab completion never load them. Importing a verb module
registers its command; `--help` lists them in this order, the order of a study.
"""

# ruff: noqa: F401, I001  (imported for their registration side effect, in workflow order)
from lossxfer.cli.app import app, main
from lossxfer.cli import train
from lossxfer.cli import zoo
from lossxfer.cli import objectives
from lossxfer.cli import finetune
from lossxfer.cli import extract
from lossxfer.cli import probe
from lossxfer.cli import separation
from lossxfer.cli import cka
from lossxfer.cli import report
from lossxfer.cli import info
from lossxfer.cli import store

__all__ = ["app", "main"]
