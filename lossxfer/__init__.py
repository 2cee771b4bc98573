"""lossxfer: how the training objective shapes representations and their transferability."""

__version__ = "0.1.0"
