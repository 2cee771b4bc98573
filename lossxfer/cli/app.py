"""The Typer application and the entry point that maps errors to exit codes (docs/cli.md)."""

from __future__ import annotations

import os
import sys
import traceback
from typing import Annotated

import typer

from lossxfer import __version__

HELP = (
    "Study how a classifier's training objective shapes its features and their "
    'transferability (Kornblith et al., "Why Do Better Loss Functions Lead to Less '
    'Transferable Features?", NeurIPS 2021).\n\n'
    "Every verb reads files and writes files: checkpoints (.safetensors), activation stores "
    "(.h5) and result records (.json), so verbs compose in shell scripts and SLURM job arrays. "
    "A study: train → extract → probe, separation, cka → report.\n\n"
    "Example: lossxfer train --data digits --classes 0-4 --loss cosine_softmax -o runs/cos"
)

EPILOG = "Exit status: 0 ok, 1 internal error, 2 usage, 3 bad input file, 4 device unavailable, \
5 diverged, 130 interrupted, 143 preempted after saving state."

app = typer.Typer(
    name="lossxfer",
    help=HELP,
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,  # ours below installs the scripts of completions/, not Typer's
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lossxfer {__version__}")
        raise typer.Exit()


def _install_completion(value: bool) -> None:
    if value:
        from pathlib import Path

        from lossxfer.cli.completion import current_shell, install

        shell = current_shell()
        for path in install(shell, Path.home()):
            typer.echo(f"{shell} completion: wrote {path}")
        typer.echo("It takes effect in a new shell.")
        raise typer.Exit()


def _show_completion(value: bool) -> None:
    if value:
        from lossxfer.cli.completion import SCRIPTS, current_shell
        from lossxfer.registry import check_choice

        typer.echo(SCRIPTS[check_choice("shell", current_shell(), SCRIPTS)], nl=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", help="Show the version and exit.", callback=_version),
    ] = False,
    install_completion: Annotated[
        bool,
        typer.Option(
            "--install-completion",
            help="Install tab completion for the shell named by $SHELL (bash, zsh or fish): "
            "the scripts of completions/.",
            callback=_install_completion,
        ),
    ] = False,
    show_completion: Annotated[
        bool,
        typer.Option(
            "--show-completion",
            help="Print the completion script for $SHELL, to install it elsewhere.",
            callback=_show_completion,
        ),
    ] = False,
) -> None:
    """Study how the training objective shapes features and their transferability."""


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; every failure ends in one line on stderr and a documented exit code."""
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
    from typer._click.exceptions import UsageError as ClickUsageError

    from lossxfer.cli.completion import COMPLETE_VAR, prepare
    from lossxfer.errors import LossxferError

    args = sys.argv[1:] if argv is None else argv
    command = typer.main.get_command(app)
    prepare(command)
    if COMPLETE_VAR in os.environ:  # a completion request (completions/ scripts): answer, exit
        from typer._completion_classes import completion_init

        completion_init()
        command.main(args=args, prog_name="lossxfer", complete_var=COMPLETE_VAR)
    debug = "--debug" in args or bool(os.environ.get("LOSSXFER_DEBUG"))
    try:
        rv = command.main(args=args, prog_name="lossxfer", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except LossxferError as exc:
        if debug:
            traceback.print_exc()
        _error(str(exc))
        code = exc.exit_code
    except NoArgsIsHelpError as exc:
        exc.show()
        code = exc.exit_code
    except ClickUsageError as exc:
        # One line, like every other error (docs/cli.md, "Exit status"), and where to look.
        hint = f" (see '{exc.ctx.command_path} -h')" if exc.ctx is not None else ""
        _error(exc.format_message() + hint)
        code = exc.exit_code
    except ClickException as exc:
        _error(exc.format_message())
        code = exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        _error("interrupted")
        code = 130
    except BrokenPipeError:
        # `lossxfer report ... | head`: the reader went away; not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 0
    except Exception as exc:
        if debug:
            traceback.print_exc()
        _error(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)")
        code = 1
    sys.exit(code)


def _error(message: str) -> None:
    text = " ".join(message.split("\n"))
    sys.stderr.write(f"lossxfer: error: {text}\n")
    sys.stderr.flush()
