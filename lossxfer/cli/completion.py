"""Shell completion and choice validation: one table says what each option's values may be.

Every choice-valued option, in whichever verb declares it, completes its values from `CHOICES`
and is validated against the same names while the command line is parsed (exit 2 with a
did-you-mean, before any heavy import). Other options complete from context: `--layer(s)` from
the stores and checkpoints on the line, `--loss-opt` from the chosen objective's options, paths
by suffix. The bash, zsh and fish scripts (`completions/`, and what `--install-completion`
writes) all ask `lossxfer` itself through one protocol, Click's bash one, so every shell offers
the same candidates; a candidate ending in `/` or `=` is continued without a space.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer._click as click

PROG = "lossxfer"
COMPLETE_VAR = "_LOSSXFER_COMPLETE"


def _names(module: str, attr: str, extra: tuple[str, ...] = ()) -> Callable[[], list[str]]:
    """Names from a light module's registry or tuple, read only when needed."""

    def names() -> list[str]:
        found = getattr(importlib.import_module(module), attr)
        return [*(found.names() if hasattr(found, "names") else found), *extra]

    return names


def _words(*words: str) -> Callable[[], list[str]]:
    return lambda: list(words)


# Option → its valid values. Where the owning module imports numpy or torch at the top, the
# names are listed here and tests/test_shell.py checks them against the library's own.
CHOICES: dict[str, Callable[[], list[str]]] = {
    "--loss": _names("lossxfer.objectives", "OBJECTIVES"),
    "--arch": _names("lossxfer.models", "ARCHS"),
    "--split": _names("lossxfer.data", "SPLITS"),
    "--pool": _names("lossxfer.activations", "POOLS"),
    "--dtype": _names("lossxfer.store", "DTYPES"),
    "--compression": _names("lossxfer.store", "COMPRESSIONS"),
    "--estimator": _names("lossxfer.similarity.registry", "ESTIMATORS"),
    "--precision": _names("lossxfer.similarity.registry", "PRECISIONS"),
    "--backend": _words("auto", "numpy", "torch", "cupy"),
    "--method": _names("lossxfer.probe.methods", "PROBES", ("all",)),
    "--preset": _names("lossxfer.probe.methods", "PRESETS"),
}


def parse_list(values: Iterable[str] | None) -> list[str]:
    """Options given repeatedly and/or comma-separated: `--layer a,b --layer c` → [a, b, c]."""
    out: list[str] = []
    for value in values or ():
        out.extend(part.strip() for part in value.split(",") if part.strip())
    return out


# How messages name a choice when not by its option: "unknown architecture 'resnet5'".
KIND = {"--arch": "architecture"}


def check_choices(param: click.Parameter, value: Any) -> None:
    """Validate a CHOICES option's value(s); lists may also be comma-separated."""
    from lossxfer.errors import UsageError
    from lossxfer.registry import check_choice

    option = next((o for o in param.opts if o in CHOICES), None)
    if option is None or value is None:
        return
    values = parse_list(value) if isinstance(value, (list, tuple)) else [value]
    for item in values:
        try:
            check_choice(KIND.get(option, option.lstrip("-")), item, CHOICES[option]())
        except UsageError as exc:  # name the option, as every other usage error does
            raise UsageError(f"{option}: {exc}") from None


def complete_path(*suffixes: str) -> Callable[[str], list[str]]:
    """Shell completion of file paths with the given suffixes (any file if none) and folders."""

    def complete(incomplete: str) -> list[str]:
        folder, _, stem = incomplete.rpartition("/")
        base = Path(folder or ".")
        try:
            entries = sorted(base.iterdir())
        except OSError:
            return []
        prefix = f"{folder}/" if folder else ""
        return [
            f"{prefix}{e.name}{'/' if e.is_dir() else ''}"
            for e in entries
            if e.name.startswith(stem)
            and not e.name.startswith(".")
            and (e.is_dir() or not suffixes or e.name.endswith(suffixes))
        ]

    return complete


def _line_words(ctx: click.Context) -> list[str]:
    """Every word given so far: parsed parameters, and what an incomplete line left unparsed."""
    words: list[object] = list(ctx.args)
    for value in ctx.params.values():
        words += value if isinstance(value, (list, tuple)) else [value]
    return [str(w) for w in words if w is not None]


def _complete_layers(ctx: click.Context, incomplete: str) -> list[str]:
    """Layer names of the stores and checkpoints on the line (`--layers a,b` aware).

    A checkpoint's names come from its safetensors header; only stores need h5py."""
    from lossxfer.sniff import checkpoint_layers

    names = ["all"]
    for word in _line_words(ctx):
        path = Path(word)
        try:
            if word.endswith(".safetensors") and path.is_file():
                names += checkpoint_layers(path)
            elif word.endswith(".h5") and path.is_file():
                names += _store_layers(path)
        except Exception:
            continue
    head, _, stem = incomplete.rpartition(",")
    prefix = f"{head}," if head else ""
    return [prefix + n for n in dict.fromkeys(names) if n.startswith(stem)]


def _store_layers(path: Path) -> list[str]:
    import h5py

    with h5py.File(path, "r") as f:
        return [
            k
            for split in f.values()
            if isinstance(split, h5py.Group)
            for k in split
            if k not in ("labels", "index")
        ]


def _complete_loss_opt(ctx: click.Context, incomplete: str) -> list[str]:
    """`key=` for the options of the objective chosen by --loss (softmax when not given)."""
    import dataclasses
    import typing

    from lossxfer.objectives import OBJECTIVES

    loss = ctx.params.get("loss") or "softmax"
    if loss not in OBJECTIVES:
        return []
    cls = OBJECTIVES.get(loss)
    key, eq, _ = incomplete.partition("=")
    if not eq:
        return [f"{f.name}=" for f in dataclasses.fields(cls) if f.name.startswith(key)]
    hint = typing.get_type_hints(cls).get(key)
    values = typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else ()
    values = ("true", "false") if hint is bool else values
    return [f"{key}={v}" for v in values if f"{key}={v}".startswith(incomplete)]


def complete_data(incomplete: str) -> list[str]:
    from lossxfer.data import DATASETS

    return [name for name in DATASETS.names() if name.startswith(incomplete)]


def _complete_device(incomplete: str) -> list[str]:
    return [d for d in ("auto", "cpu", "cuda", "cuda:0", "cuda:1") if d.startswith(incomplete)]


ContextComplete = Callable[["click.Context", str], list[str]]
# Options completed from context rather than a fixed list of names.
CONTEXT_COMPLETION: dict[str, ContextComplete] = {
    "--layer": _complete_layers,
    "--layers": _complete_layers,
    "--layers-b": _complete_layers,
    "--loss-opt": _complete_loss_opt,
    "--data": lambda ctx, incomplete: complete_data(incomplete),
    "--device": lambda ctx, incomplete: _complete_device(incomplete),
}


def prepare(command: click.Command) -> None:
    """Give every option in the tree its completion (from the tables) and choice validation.

    Verbs declare options plainly; an option with its own `autocompletion` keeps it.
    """
    from typer._click.shell_completion import CompletionItem

    for sub in getattr(command, "commands", {}).values():
        prepare(sub)
    for param in command.params:
        option = next((o for o in param.opts if o in CHOICES or o in CONTEXT_COMPLETION), None)
        if option is None:
            continue
        if option in CHOICES:
            param.callback = _validating(param.callback)
        if param._custom_shell_complete is not None:
            continue
        complete = CONTEXT_COMPLETION.get(option) or _from_names(CHOICES[option])
        param._custom_shell_complete = lambda ctx, p, incomplete, complete=complete: [
            CompletionItem(v) for v in complete(ctx, incomplete)
        ]


def _from_names(names: Callable[[], list[str]]) -> ContextComplete:
    return lambda ctx, incomplete: [n for n in names() if n.startswith(incomplete)]


def _validating(callback: Callable[..., Any] | None) -> Callable[..., Any]:
    def validate(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if not ctx.resilient_parsing:
            check_choices(param, value)
        return callback(ctx, param, value) if callback is not None else value

    return validate


# -- the scripts -----------------------------------------------------------------------------
# Each turns its shell's command line into COMP_WORDS/COMP_CWORD, runs `lossxfer` with
# {COMPLETE_VAR}=complete_bash and reads one candidate per line; no candidates: file names.
BASH = f"""\
# bash completion for {PROG}; generated by `make docs`, do not edit.
# Candidates come from `{PROG}` itself ({COMPLETE_VAR}=complete_bash), so verbs, options,
# registry names and layer names are always those of the installed version.
_{PROG}_completion() {{
    mapfile -t COMPREPLY < <(env COMP_WORDS="${{COMP_WORDS[*]}}" COMP_CWORD="$COMP_CWORD" \\
                               {COMPLETE_VAR}=complete_bash "$1" 2>/dev/null)
    # a folder or `key=`: keep completing the same word instead of ending it
    if [[ ${{#COMPREPLY[@]}} -eq 1 && ${{COMPREPLY[0]}} == *[/=] ]]; then
        compopt -o nospace
    fi
    return 0
}}
complete -o default -F _{PROG}_completion {PROG}
"""

ZSH = f"""\
#compdef {PROG}
# zsh completion for {PROG}; generated by `make docs`, do not edit.
# Put this folder on fpath (autoload) or source the file after compinit. Candidates come from
# `{PROG}` itself ({COMPLETE_VAR}=complete_bash), as in bash and fish.
_{PROG}() {{
  local -a found whole open
  found=( ${{(f)"$(env COMP_WORDS="${{words[1,CURRENT]}}" COMP_CWORD=$((CURRENT - 1)) \\
                 {COMPLETE_VAR}=complete_bash {PROG} 2>/dev/null)"}} )
  (( ${{#found}} )) || {{ _files; return }}
  open=( ${{(M)found:#*[/=]}} )
  whole=( ${{found:#*[/=]}} )
  (( ${{#whole}} )) && compadd -- $whole
  (( ${{#open}} )) && compadd -S '' -- $open
  return 0
}}
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
  _{PROG} "$@"
else
  compdef _{PROG} {PROG}
fi
"""

FISH = f"""\
# fish completion for {PROG}; generated by `make docs`, do not edit.
# Candidates come from `{PROG}` itself ({COMPLETE_VAR}=complete_bash), as in bash and zsh.
function __{PROG}_complete
    set -l words (commandline -opc)
    set -l current (commandline -ct)
    set -l found (env COMP_WORDS="$words $current" COMP_CWORD=(count $words) \\
        {COMPLETE_VAR}=complete_bash {PROG} 2>/dev/null)
    if test (count $found) -gt 0
        printf '%s\\n' $found
    else
        __fish_complete_path $current
    end
end
complete --command {PROG} --no-files --arguments '(__{PROG}_complete)'
"""

SCRIPTS = {"bash": BASH, "zsh": ZSH, "fish": FISH}
# Where the repository keeps each script (tools/gendocs.py writes them there).
REPO_PATHS = {"bash": f"completions/{PROG}.bash", "zsh": f"completions/_{PROG}",
              "fish": f"completions/{PROG}.fish"}  # fmt: skip


def install(shell: str, home: Path) -> list[Path]:
    """Install the script for `shell` under `home` where the shell finds it; the files changed.

    bash: ~/.bash_completions/lossxfer.sh, sourced from ~/.bashrc; zsh: ~/.zfunc/_lossxfer with
    ~/.zfunc on fpath in ~/.zshrc; fish: ~/.config/fish/completions/lossxfer.fish (autoloaded).
    """
    from lossxfer.fsio import write_text_atomic
    from lossxfer.registry import check_choice

    check_choice("shell", shell, SCRIPTS)
    if shell == "fish":
        path = home / ".config" / "fish" / "completions" / f"{PROG}.fish"
        rc, line = None, ""
    elif shell == "zsh":
        path = home / ".zfunc" / f"_{PROG}"
        rc, line = home / ".zshrc", "fpath=(~/.zfunc $fpath); autoload -Uz compinit; compinit"
    else:
        path = home / ".bash_completions" / f"{PROG}.sh"
        rc, line = home / ".bashrc", f"source '{path}'"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, SCRIPTS[shell], force=True)
    changed = [path]
    if rc is not None:
        text = rc.read_text() if rc.is_file() else ""
        if line not in text:
            write_text_atomic(rc, text + ("" if text.endswith("\n") or not text else "\n")
                              + line + "\n", force=True)  # fmt: skip
            changed.append(rc)
    return changed


def current_shell() -> str:
    """The user's shell, from $SHELL (bash when unknown)."""
    return Path(os.environ.get("SHELL", "bash")).name or "bash"
