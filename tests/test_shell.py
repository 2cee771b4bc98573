"""The CLI as a shell user meets it: generated docs and completions, start-up, clean stdout."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
from conftest import REPO, CliRun

from lossxfer.cli.completion import COMPLETE_VAR

sys.path.insert(0, str(REPO / "tools"))
import gendocs as docs  # tools/ is not a package: the generator is not installed

HEAVY = ("torch", "numpy", "h5py", "sklearn", "cupy", "scipy", "matplotlib")
BIN = str(Path(sys.executable).parent)  # where the `lossxfer` entry point is installed
ANSI = re.compile(r"\x1b\[")
VERBS = [v.name for v in docs.collect()[1]]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **extra}


# -- generated files ------------------------------------------------------------------------------
def test_generated_files_are_current() -> None:
    assert docs.stale() == [], "generated files are stale: run `make docs`"


def test_staleness_is_detected(tmp_path: Path) -> None:
    for rel, text in docs.generate().items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert docs.stale(tmp_path) == []
    (tmp_path / "man" / "lossxfer-gone.1").write_text(".TH GONE 1\n")
    page = tmp_path / "man" / "lossxfer-separation.1"
    page.write_text(page.read_text().replace("Class separation", "Class sep"))
    assert docs.stale(tmp_path) == ["man/lossxfer-gone.1", "man/lossxfer-separation.1"]


def test_every_verb_has_help_and_an_example() -> None:
    root, verbs = docs.collect()
    assert root.examples and "separation" in VERBS
    for verb in verbs:
        assert verb.summary, f"{verb.name}: no help text"
        assert verb.examples, f"{verb.name}: no `epilog='Example: ...'`"
        for example in verb.examples:
            assert example.startswith(f"lossxfer {verb.name}"), (verb.name, example)
        for p in verb.params:
            assert p.help, f"{verb.name} {p.names}: no help text"


@pytest.mark.skipif(shutil.which("man") is None, reason="man is not installed")
@pytest.mark.parametrize("page", sorted(p.name for p in (REPO / "man").glob("*.1")))
def test_man_page_renders_without_warnings(page: str) -> None:
    proc = subprocess.run(
        ["man", "--warnings", "-l", str(REPO / "man" / page)],
        capture_output=True,
        text=True,
        env={**os.environ, "MANWIDTH": "80", "MANPAGER": "cat", "PAGER": "cat"},
        check=False,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    for section in ("SYNOPSIS", "OPTIONS", "EXAMPLES", "FILES", "ENVIRONMENT", "EXIT STATUS"):
        assert section in proc.stdout, (page, section)


# -- start-up and completion ----------------------------------------------------------------------
def _loaded_modules(args: list[str], env: dict[str, str]) -> set[str]:
    code = (
        "import sys\n"
        "from lossxfer.cli import main\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('\\n'.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, check=True
    )
    return set(proc.stderr.split())


def _bash_request(words: str, cword: int) -> dict[str, str]:
    return _env(**{COMPLETE_VAR: "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)})


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--help"], {}),
        ([], _bash_request("lossxfer tr", 1)),
        ([], _bash_request("lossxfer train --loss co", 3)),
        ([], _bash_request("lossxfer train --arch ", 3)),
        ([], _bash_request("lossxfer separation --", 2)),
    ],
)
def test_help_and_completion_import_nothing_heavy(args: list[str], env: dict[str, str]) -> None:
    loaded = _loaded_modules(args, {**_env(), **env})
    assert "lossxfer.cli" in loaded
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}


def _complete(words: str, cwd: Path = REPO) -> list[str]:
    """Ask `lossxfer` for bash completions of the last word of `words` (Click's protocol)."""
    parts = words.split(" ")
    proc = subprocess.run(
        [sys.executable, "-m", "lossxfer"],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_bash_request(words, len(parts) - 1),
        check=True,
    )
    return proc.stdout.split()


def test_completion_of_verbs_registries_layers_and_files(tmp_path: Path) -> None:
    assert _complete("lossxfer sep") == ["separation"]
    train = "train" if "train" in VERBS else None
    if train:
        assert "cosine_softmax" in _complete("lossxfer train --loss co")
        assert _complete("lossxfer train --arch res") == ["resnet18", "resnet50"]
        assert "digits" in _complete("lossxfer train --data dig")
    store = _store(tmp_path / "acts.h5")
    (tmp_path / "model.safetensors").write_bytes(b"x")
    (tmp_path / "runs").mkdir()
    assert _complete("lossxfer separation ", cwd=tmp_path) == ["acts.h5", "runs/"]
    assert _complete(f"lossxfer separation {store} --layer p") == ["penultimate"]
    assert sorted(_complete(f"lossxfer separation {store} --layer penultimate,")) == [
        "penultimate,all",
        "penultimate,logits",
        "penultimate,penultimate",
    ]
    assert _complete("lossxfer separation x.h5 --split t") == ["train", "test"]
    if "cka" in VERBS:  # a verb that declares --layers itself gets the same completion
        assert _complete(f"lossxfer cka {store} --layers lo") == ["logits"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_script_fills_compreply() -> None:
    """The generated bash function itself, in a real bash, without a terminal."""
    script = (
        f"source {REPO / 'completions' / 'lossxfer.bash'}\n"
        "COMP_WORDS=(lossxfer separation --bl); COMP_CWORD=2\n"
        "_lossxfer_completion lossxfer\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    out = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", script],
        capture_output=True, text=True, env=_env(), check=True,
    ).stdout  # fmt: skip
    assert out.split() == ["--block-rows"]


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_completion() -> None:
    script = f"source {REPO / 'completions' / 'lossxfer.fish'}; complete -C 'lossxfer sep'"
    out = subprocess.run(
        ["fish", "--no-config", "-c", script],
        capture_output=True, text=True, env=_env(), check=True,
    ).stdout  # fmt: skip
    assert out.split("\t")[0].strip() == "separation"


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_script_is_valid() -> None:
    subprocess.run(["zsh", "-n", str(REPO / "completions" / "_lossxfer")], check=True)


def test_choices_listed_here_are_the_librarys() -> None:
    """--backend's names are listed in cli/completion.py (its module imports numpy)."""
    from lossxfer.cli.completion import CHOICES
    from lossxfer.similarity.backends import BACKENDS

    assert CHOICES["--backend"]() == list(BACKENDS)


def test_every_choice_completes_and_typos_get_a_did_you_mean(cli: Callable[..., CliRun]) -> None:
    from lossxfer.cli.completion import CHOICES, KIND

    train, extract = "train --data digits -o x", "extract x --data digits -o x.h5"
    verbs = {"--loss": train, "--arch": train, "--split": extract, "--pool": extract,
             "--dtype": extract, "--compression": extract, "--estimator": "cka x",
             "--backend": "cka x", "--precision": "cka x", "--method": "probe x",
             "--preset": "probe x"}  # fmt: skip
    assert set(verbs) == set(CHOICES)
    for option, line in verbs.items():
        names = CHOICES[option]()
        assert _complete(f"lossxfer {line} {option} ") == names, option
        run = cli(*line.split(), option, names[0] + "q")
        assert run.code == 2, (option, run.stderr)
        kind = KIND.get(option, option[2:])
        expected = f"unknown {kind} '{names[0]}q' (did you mean {names[0]!r}?)"
        assert expected in run.stderr, run.stderr


def test_install_completion_shell_must_be_known(tmp_path: Path) -> None:
    env = _env(HOME=str(tmp_path), SHELL="/bin/tcsh")
    proc = subprocess.run([sys.executable, "-m", "lossxfer", "--install-completion"], env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode == 2
    assert "unknown shell 'tcsh'; choose from: bash, zsh, fish" in proc.stderr
    assert not any(tmp_path.iterdir())


# -- stdout purity --------------------------------------------------------------------------------
def _store(path: Path) -> Path:
    from lossxfer.store import LayerSpec, StoreWriter

    rng = np.random.default_rng(0)
    dataset = {"spec": "digits", "classes": [0, 1, 2], "label": "digits[0-2]"}
    model = {"arch": "smallcnn", "objective": "softmax", "objective_opts": {}, "seed": 0,
             "data": dataset, "checkpoint_sha256": "0" * 64}  # fmt: skip
    attrs = {"arch": "smallcnn", "objective": "softmax", "model": model, "dataset": dataset}
    with StoreWriter(path, attrs) as w:
        for split, n in (("train", 60), ("val", 30), ("test", 30)):
            labels = np.arange(n) % 3
            x = rng.normal(size=(n, 8)) + 3 * np.eye(8)[labels]
            layers = {"penultimate": x.astype(np.float32), "logits": x[:, :3].astype(np.float32)}
            specs = {k: LayerSpec(v.shape[1], (v.shape[1],), "none") for k, v in layers.items()}
            w.create_split(split, n, specs)
            w.write(split, 0, labels, np.arange(n), layers)
    return path


# Arguments of each verb that runs on a store or result records; verbs that need a trained
# checkpoint (train, extract, finetune) check their own --json output in their tests.
CASES = {
    "info": lambda d: [d / "acts.h5", d / "sep.json"],
    "separation": lambda d: [d / "acts.h5"],
    "cka": lambda d: [d / "acts.h5", "--layer", "penultimate,logits"],
    "probe": lambda d: [d / "acts.h5", "--layer", "penultimate", "--method", "knn"],
    "report": lambda d: [d / "sep.json"],
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lossxfer.separation import SeparationConfig, run_separation

    d = tmp_path_factory.mktemp("inputs")
    _store(d / "acts.h5")
    run_separation(SeparationConfig(store=str(d / "acts.h5"))).write(d / "sep.json")
    return d


@pytest.mark.parametrize("verb", sorted(set(CASES) & set(VERBS)))
def test_json_stdout_is_one_document_and_quiet_is_quiet(
    verb: str, inputs: Path, cli: Callable[..., CliRun]
) -> None:
    args = CASES[verb](inputs)
    run = cli(verb, *args, "--json", "-q")
    assert run.code == 0, run.stderr
    json.loads(run.stdout)  # exactly one JSON document, nothing else
    assert run.stderr == ""
    table = cli(verb, *args)
    assert table.code == 0, table.stderr
    assert table.stdout.strip() and not ANSI.search(table.stdout + table.stderr)


def test_no_color_and_pipes_give_plain_text(inputs: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lossxfer", "separation", str(inputs / "acts.h5")],
        capture_output=True, text=True, env=_env(NO_COLOR="1"), check=True,
    )  # fmt: skip
    assert "penultimate" in proc.stdout and not ANSI.search(proc.stdout + proc.stderr)
    assert "lossxfer INFO" in proc.stderr  # plain log lines (not a terminal), never on stdout
    assert "INFO" not in proc.stdout


def test_options_mean_the_same_in_every_verb() -> None:
    """Shared options keep one name, short form and help text (cli/common.py) across verbs."""
    from lossxfer.cli import common

    shared = {
        "--json": common.JsonOpt,
        "--quiet": common.QuietOpt,
        "--debug": common.DebugOpt,
        "--force": common.ForceOpt,
        "--device": common.DeviceOpt,
        "--seed": common.SeedOpt,
    }
    for verb in docs.collect()[1]:
        options = {n: p for p in verb.params if not p.argument for n in p.names}
        assert {"--json", "--quiet", "--debug"} <= options.keys(), verb.name
        for name, p in options.items():
            if name in shared:
                assert p.help == get_args(shared[name])[1].help, (verb.name, name)
        for short, long in (("-q", "--quiet"), ("-o", "--out"), ("-h", "--help")):
            if short in options or long in options:
                assert options.get(short) is options.get(long), (verb.name, short, long)


def test_progress_on_a_terminal_stays_off_stdout(tmp_path: Path) -> None:
    """With stderr a terminal the Rich bar draws there; stdout still holds only the JSON."""
    import pty
    import threading

    store = _store(tmp_path / "acts.h5")
    master, slave = pty.openpty()
    terminal: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                return
            if not chunk:
                return
            terminal.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    args = ["separation", str(store), "--json", "--block-rows", "1", "--layer", "all"]
    proc = subprocess.run(
        [sys.executable, "-m", "lossxfer", *args],
        stdout=subprocess.PIPE, stderr=slave, env=_env(TERM="xterm"), check=True,
    )  # fmt: skip
    os.close(slave)
    reader.join(timeout=5)
    os.close(master)
    assert json.loads(proc.stdout)["kind"] == "separation"
    assert b"separation" in b"".join(terminal)  # the bar was drawn, on the terminal


def test_docs_stand_alone_and_method_citations_resolve() -> None:
    """Help, man pages, docs and comments cite docs/method.md, never files outside the
    repository, and every `docs/method.md §N` they cite exists."""
    sections = set(re.findall(r"^## §(\d+)", (REPO / "docs" / "method.md").read_text(), re.M))
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()  # fmt: skip
    for name in tracked:
        path = REPO / name
        if name == "CHANGELOG.md" or path.suffix not in {".py", ".md", ".1", ".sh", ".sbatch"}:
            continue
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"REFERENCE\.md|DESIGN\.md|\.\./shared", text), name
        for cited in re.findall(r"docs/method\.md §(\d+)", text):
            assert cited in sections, (name, cited)
