"""Generate man pages, docs/cli.md and shell completion scripts from the app's own help.

`make docs` runs `python tools/gendocs.py`; `--check` exits 1 when a generated file differs from
what the app would generate now (tests/test_shell.py runs the same check). Typer vendors Click,
so this walks the Click command tree itself instead of depending on a Click-based tool. It lives
outside the installed package: users never need it; the completion scripts it writes come from
`lossxfer.cli.completion`, which `lossxfer --install-completion` installs too.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import typer
import typer._click as click

from lossxfer import __version__
from lossxfer.cli import load
from lossxfer.cli.completion import COMPLETE_VAR, REPO_PATHS, SCRIPTS
from lossxfer.cli.objectives import objective_rows
from lossxfer.errors import EXIT_CODES
from lossxfer.fsio import write_text_atomic

PROG = "lossxfer"
REPO = Path(__file__).resolve().parents[1]

ENVIRONMENT = {
    "LOSSXFER_DATA_ROOT": "Folder holding datasets: `--data NAME` without a root reads "
    "$LOSSXFER_DATA_ROOT/NAME.",
    "LOSSXFER_DEBUG": "When set and non-empty, errors print a full traceback (as --debug).",
    "NO_COLOR": "When set, output carries no colour; output that is not a terminal never does.",
    "COLUMNS": "Width used for tables and help text.",
    COMPLETE_VAR: "Set by the completion scripts to ask lossxfer for completions.",
}
FILES = {
    "*.safetensors": "Checkpoint: weights and self-describing metadata (`train`); "
    "state.safetensors beside it holds the resumable training state.",
    "*.h5": "Activation store: labels, sample index and one dataset per layer and split "
    "(`extract`).",
    "*.json": "Result record (`lossxfer.result/1`): one measurement, what `report` reads.",
}
OBJECTIVES_INTRO = (
    "Set options with `--loss-opt KEY=VALUE`. Without `--lr` the peak learning rate is "
    "0.1 × batch/256 times the objective's lr scale. docs/method.md §1 states each loss."
)
SEE_ALSO = (
    "docs/method.md (the formulas and protocols), docs/formats.md (the files) and docs/cli.md "
    "in the lossxfer repository."
)


@dataclass
class Param:
    names: list[str]  # option strings, or the argument's metavar
    metavar: str  # "" for flags
    help: str
    default: str  # "" when none worth showing
    argument: bool
    required: bool
    repeat: bool


@dataclass
class Verb:
    path: list[str]  # ["store", "merge"] for `lossxfer store merge`
    summary: str
    paragraphs: list[str]
    examples: list[str]
    notes: str
    params: list[Param]

    @property
    def name(self) -> str:
        return " ".join(self.path)

    @property
    def page(self) -> str:
        return "-".join([PROG, *self.path])


def _paragraphs(text: str) -> list[str]:
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]


def _param(p: click.Parameter) -> Param:
    argument = p.param_type_name == "argument"
    flag = bool(getattr(p, "is_flag", False))
    name = (p.name or "").rstrip("_")
    path = getattr(getattr(p, "type_descriptor", None), "is_path", False)
    metavar = "FILE" if path and not argument else name.replace("_", "-").upper()
    metavar = "" if flag else (p.metavar or metavar)
    default = p.default
    shown = (
        "" if flag or argument or default in (None, (), [], "") or callable(default) else default
    )
    return Param(
        names=[metavar] if argument else [*p.opts, *p.secondary_opts],
        metavar=metavar,
        help=" ".join((getattr(p, "help", None) or "").split()),
        default=str(shown),
        argument=argument,
        required=p.required,
        repeat=bool(getattr(p, "multiple", False) or getattr(p, "nargs", 1) == -1),
    )


def _verb(path: list[str], cmd: click.Command) -> Verb:
    paragraphs = _paragraphs(cmd.help or "")
    in_help = [p.split(":", 1)[1] for p in paragraphs if re.match(r"Examples?:", p)]
    paragraphs = [p for p in paragraphs if not re.match(r"Examples?:", p)]
    epilog = (cmd.epilog or "").strip()
    match = re.match(r"Examples?:\s*(.*?)(?:\.\s+(?=[A-Z])(.*))?$", epilog, re.S)
    examples, notes = ([], epilog) if match is None else (match[1].split("\n"), match[2] or "")
    return Verb(
        path=path,
        summary=paragraphs[0].rstrip(".") if paragraphs else "",
        paragraphs=paragraphs[1:],
        examples=[" ".join(e.split()) for e in [*in_help, *examples] if e.strip()],
        notes=" ".join(notes.split()),
        params=[_param(p) for p in cmd.params if not getattr(p, "hidden", False)],
    )


def collect() -> tuple[Verb, list[Verb]]:
    """The root command and every verb (nested groups flattened: `store merge`)."""
    root = typer.main.get_command(load())
    verbs: list[Verb] = []

    def walk(path: list[str], cmd: click.Command) -> None:
        subs = getattr(cmd, "commands", None)
        if subs is None:
            verbs.append(_verb(path, cmd))
            return
        for name in sorted(subs):
            walk([*path, name], subs[name])

    walk([], root)
    return _verb([], root), verbs


def _usage(verb: Verb) -> str:
    args = []
    for p in verb.params:
        if p.argument:
            text = p.metavar + ("..." if p.repeat else "")
            args.append(text if p.required else f"[{text}]")
    return " ".join([PROG, *verb.path, "[OPTIONS]", *args])


# -- man pages (roff) ----------------------------------------------------------------------------
def _roff(text: str, code: bool = False) -> str:
    """Escape for roff. In code every '-' is a minus sign; in prose, those of options only, so
    that `--max-cov-dim` copied from the page still works."""
    text = text.replace("\\", "\\e")
    if code:
        text = text.replace("-", "\\-")
    else:
        text = re.sub(r"(?<![\w-])-{1,2}[A-Za-z][\w-]*", lambda m: m[0].replace("-", "\\-"), text)
        text = re.sub(r"`([^`]+)`", lambda m: "\\fB" + m[1] + "\\fR", text)
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line for line in text.split("\n"))


def _code(text: str) -> str:
    return _roff(text, code=True)


def _man_common(lines: list[str], verb: Verb) -> None:
    if verb.examples:
        lines += [".SH EXAMPLES"]
        for example in verb.examples:
            lines += [".PP", ".nf", ".RS 4", _code(example), ".RE", ".fi"]
    lines += [".SH FILES"]
    for pattern, text in FILES.items():
        lines += [".TP", f"\\fI{_code(pattern)}\\fR", _roff(text)]
    lines += [".SH ENVIRONMENT"]
    for name, text in ENVIRONMENT.items():
        lines += [".TP", f"\\fB{_code(name)}\\fR", _roff(text)]
    lines += [".SH EXIT STATUS"]
    for code, text in EXIT_CODES.items():
        lines += [".TP", f"\\fB{code}\\fR", _roff(text[:1].upper() + text[1:] + ".")]


def _options(lines: list[str], verb: Verb) -> None:
    options = [p for p in verb.params if not p.argument]
    for title, group in (
        ("ARGUMENTS", [p for p in verb.params if p.argument]),
        ("OPTIONS", options),
    ):
        if not group:
            continue
        lines += [f".SH {title}"]
        for p in group:
            names = ", ".join(f"\\fB{_code(n)}\\fR" for n in p.names) if not p.argument else ""
            head = f"\\fI{p.metavar}\\fR" if p.argument else names
            if p.metavar and not p.argument:
                head += f" \\fI{p.metavar}\\fR"
            text = p.help + (f" (default: {p.default})" if p.default else "")
            text += " May be given more than once." if p.repeat and not p.argument else ""
            lines += [".TP", head, _roff(text)]


def man_page(verb: Verb, root: Verb, verbs: list[Verb]) -> str:
    title = verb.page.upper()
    lines = [
        f'.\\" Generated by `make docs` (tools/gendocs.py) from `{verb.name or PROG} --help`;',
        '.\\" do not edit.',
        f'.TH {_code(title)} 1 "" "{PROG} {__version__}" "{PROG} manual"',
        ".nh",
        ".SH NAME",
        f"{_code(verb.page)} \\- {_roff(verb.summary.split(' (')[0])}",
        ".SH SYNOPSIS",
        ".nf",
        _code(_usage(verb) + (" VERB [ARGS]..." if verb is root else "")),
        ".fi",
        ".SH DESCRIPTION",
    ]
    shortened = verb.summary.split(" (")[0] != verb.summary
    for paragraph in [verb.summary + "." if shortened else "", *verb.paragraphs, verb.notes]:
        if paragraph:
            lines += [".PP", _roff(paragraph)]
    if verb is root:
        lines += [".SH COMMANDS"]
        for v in verbs:
            lines += [".TP", f"\\fB{_code(v.page)}\\fR(1)", _roff(v.summary + ".")]
    _options(lines, verb)
    if verb.name == "train":
        lines += [".SH OBJECTIVES", _roff(OBJECTIVES_INTRO)]
        for name, options, scale, formula, reference in objective_rows():
            text = f"{formula} Options: {options or 'none'}. lr scale {scale}. {reference}."
            lines += [".TP", f"\\fB{_code(name)}\\fR", _roff(text)]
    _man_common(lines, verb)
    see = ", ".join(f"\\fB{_code(v.page)}\\fR(1)" for v in [root, *verbs] if v is not verb)
    lines += [".SH SEE ALSO", see + ".", ".PP", _roff(SEE_ALSO)]
    return "\n".join(lines) + "\n"


# -- docs/cli.md ---------------------------------------------------------------------------------
def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(root: Verb, verbs: list[Verb]) -> str:
    out = [
        f"# {PROG} command-line reference",
        "",
        "<!-- Generated by `make docs` (tools/gendocs.py) from the CLI's own help; do not edit."
        " -->",
        "",
        root.summary + ".",
        "",
        *(p + "\n" for p in root.paragraphs),
        "| verb | what it does |",
        "|---|---|",
        *(f"| [`{v.name}`](#{v.page}) | {_md_cell(v.summary)} |" for v in verbs),
        "",
        "Every verb also has a man page: `man -l man/lossxfer-VERB.1` (or `man lossxfer-VERB`"
        " once `man/` is on `MANPATH`).",
        "",
        "## Shell completion",
        "",
        "Completion covers verbs, options, every option with named choices (`--loss`, `--arch`,"
        " `--data`, `--split`, `--pool`, `--estimator`, `--method`, …), the option keys of the"
        " chosen objective for `--loss-opt`, layer names of the stores and checkpoints given"
        " earlier on the line, and files by extension. bash, zsh and fish offer the same"
        " candidates: the scripts in `completions/` ask `lossxfer` itself:",
        "",
        "```bash",
        "# bash: in ~/.bashrc (or copy to ~/.local/share/bash-completion/completions/lossxfer)",
        "source /path/to/lossxfer/completions/lossxfer.bash",
        "# zsh: put the folder on fpath before compinit in ~/.zshrc",
        "fpath=(/path/to/lossxfer/completions $fpath); autoload -U compinit; compinit",
        "# fish",
        "cp completions/lossxfer.fish ~/.config/fish/completions/",
        "```",
        "",
        "`lossxfer --install-completion` installs these same scripts for the shell named by"
        " `$SHELL` (`--show-completion` prints the script).",
        "",
        "## Environment",
        "",
        *(f"- `{k}`: {v}" for k, v in ENVIRONMENT.items()),
        "",
        "## Files",
        "",
        *(f"- `{k}`: {v}" for k, v in FILES.items()),
        "",
        "## Exit status",
        "",
        *(f"- `{k}`: {v}" for k, v in EXIT_CODES.items()),
        "",
    ]
    for verb in verbs:
        out += [f'<a id="{verb.page}"></a>', "", f"## {PROG} {verb.name}", "", verb.summary + "."]
        out += ["", "```", _usage(verb), "```", ""]
        for paragraph in [*verb.paragraphs, verb.notes]:
            if paragraph:
                out += [paragraph, ""]
        out += ["| option | meaning | default |", "|---|---|---|"]
        for p in verb.params:
            names = ", ".join(f"`{n}`" for n in p.names) + (f" `{p.metavar}`" * (not p.argument))
            names = names.replace(" ``", "")
            meaning = p.help + (" Repeatable." if p.repeat and not p.argument else "")
            default = f"`{p.default}`" if p.default else ("required" if p.required else "")
            out.append(f"| {names} | {_md_cell(meaning)} | {default} |")
        if verb.name == "train":
            out += ["", "Objectives (`--loss`; also `lossxfer objectives`):", "", OBJECTIVES_INTRO]
            out += ["", "| objective | options (defaults) | lr scale | loss | reference |"]
            out += ["|---|---|---|---|---|"]
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in objective_rows()]
        out += ["", "Example:", "", "```bash", *verb.examples, "```", ""]
    return "\n".join(out).rstrip("\n") + "\n"


def generate() -> dict[str, str]:
    """Every generated file, by path relative to the repository root."""
    root, verbs = collect()
    files = {f"man/{PROG}.1": man_page(root, root, verbs)}
    for verb in verbs:
        files[f"man/{verb.page}.1"] = man_page(verb, root, verbs)
    files["docs/cli.md"] = markdown(root, verbs)
    files.update({REPO_PATHS[shell]: script for shell, script in SCRIPTS.items()})
    return files


def stale(base: Path = REPO) -> list[str]:
    """Generated files that are missing or differ, and man pages of verbs that are gone."""
    files = generate()
    out = [p for p, text in files.items() if _read(base / p) != text]
    out += [
        str(p.relative_to(base))
        for p in base.glob(f"man/{PROG}*.1")
        if str(p.relative_to(base)) not in files
    ]
    return sorted(out)


def _read(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.is_file() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/gendocs.py", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if any file is stale")
    parser.add_argument("--root", type=Path, default=REPO, help="repository root")
    args = parser.parse_args(argv)
    if args.check:
        bad = stale(args.root)
        for path in bad:
            print(f"stale: {path} (run `make docs`)", file=sys.stderr)
        return 1 if bad else 0
    files = generate()
    for rel, text in files.items():
        if _read(args.root / rel) != text:
            write_text_atomic(args.root / rel, text, force=True)
    for path in args.root.glob(f"man/{PROG}*.1"):
        if str(path.relative_to(args.root)) not in files:
            path.unlink()  # the verb is gone
    return 0


if __name__ == "__main__":
    sys.exit(main())
