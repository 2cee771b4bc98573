"""The CLI in a real terminal (tmux): tab completion in bash, zsh and fish; one console.

Each shell is set up the way a user sets it up, by `lossxfer --install-completion` in an empty
home directory, and must have installed exactly the script in completions/. Then the same
keystrokes are typed in each shell and the screen is read back. tests/test_shell.py covers the
protocol underneath without a terminal. CI (.ci/run) installs tmux, zsh and fish when missing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO

from lossxfer.cli.completion import REPO_PATHS

BIN = str(Path(sys.executable).parent)  # where the `lossxfer` entry point is installed
SHELLS = ["bash", "zsh", "fish"]
RC = {  # a plain `$ ` prompt and nothing else that draws on the screen
    "bash": (".bashrc", "PS1='$ '\n"),
    "zsh": (".zshrc", "PS1='$ '\nunsetopt beep\n"),
    "fish": (
        ".config/fish/config.fish",
        "function fish_prompt; echo -n '$ '; end\nset -g fish_greeting ''\n"
        "set -g fish_autosuggestion_enabled 0\n",
    ),
}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]


class Terminal:
    """One interactive shell in its own tmux server, 200 × 30 characters."""

    def __init__(self, shell: str, home: Path, cwd: Path) -> None:
        self.socket = f"lossxfer-{shell}-{os.getpid()}-{time.monotonic_ns()}"
        self.env = {**os.environ, "HOME": str(home), "TERM": "xterm", "SHELL": shell,
                    "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
                    "XDG_CONFIG_HOME": str(home / ".config")}  # fmt: skip
        self.env.pop("TMUX", None)
        self.tmux("new-session", "-d", "-x", "200", "-y", "30", "-c", str(cwd), f"{shell} -i")
        self.wait(r"^\$", "the prompt")

    def tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], env=self.env, capture_output=True, text=True,
            check=True,
        ).stdout  # fmt: skip

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p")

    def wait(self, pattern: str, what: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if re.search(pattern, text, re.M):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} ({pattern!r}) on the screen:\n{text}")
            time.sleep(0.1)

    def complete(self, line: str, expect: str, then: tuple[str, ...] = ("Tab",)) -> str:
        """On a fresh prompt, type `line` and the keys `then`; the screen once `expect` shows."""
        for _ in range(2):  # the first may only leave a completion menu
            self.tmux("send-keys", "C-c")
            time.sleep(0.2)
        self.tmux("send-keys", "clear", "Enter")
        self.wait(r"\A\$\s*\Z", "empty screen")
        self.tmux("send-keys", "-l", line)
        self.wait(re.escape(line), "the typed line")
        for key in then:
            before = self.screen()
            self.tmux("send-keys", key)
            if key == "Tab":  # the answer comes from a Python process: let it arrive (fish
                deadline = time.monotonic() + 5  # drops a completion that keys overtake)
                while self.screen() == before and time.monotonic() < deadline:
                    time.sleep(0.1)
                time.sleep(0.2)
        return self.wait(expect, f"completion of {line!r}")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], env=self.env, check=False)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory holding a ResNet-18 checkpoint (8 residual blocks) to complete from, and
    a softmax run's separation record under records/ for `report`."""
    from test_checkpoint import make_checkpoint
    from test_shell import _store

    from lossxfer.separation import SeparationConfig, run_separation

    d = tmp_path_factory.mktemp("work")
    (d / "run").mkdir()
    make_checkpoint(d / "run" / "model.safetensors", arch="resnet18")
    record = d / "records" / "softmax-s0" / "sep.json"
    record.parent.mkdir(parents=True)
    run_separation(SeparationConfig(store=str(_store(d / "acts.h5")))).write(record)
    return d


@pytest.fixture(scope="module", params=SHELLS)
def term(request: pytest.FixtureRequest, workdir: Path, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Terminal]:  # fmt: skip
    shell = request.param
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    home = tmp_path_factory.mktemp(f"home-{shell}")
    rc, text = RC[shell]
    (home / rc).parent.mkdir(parents=True, exist_ok=True)
    (home / rc).write_text(text)
    env = {**os.environ, "HOME": str(home), "SHELL": f"/usr/bin/{shell}"}
    proc = subprocess.run([sys.executable, "-m", "lossxfer", "--install-completion"], env=env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    installed = Path(re.findall(r"wrote (\S+)", proc.stdout)[0])
    assert installed.read_text() == (REPO / REPO_PATHS[shell]).read_text()
    terminal = Terminal(shell, home, workdir)
    yield terminal
    terminal.close()


def line_of(screen: str, start: str) -> str:
    return next((x.rstrip() for x in screen.splitlines() if x.startswith(start)), "")


CHOICES = [  # every option with named choices completes from the registries
    ("lossxfer train --loss cosine_s", "--loss cosine_softmax"),
    ("lossxfer train --arch resnet1", "--arch resnet18"),
    ("lossxfer extract x.safetensors --split te", "--split test"),
    ("lossxfer extract x.safetensors --pool fl", "--pool flatten"),
    ("lossxfer extract x.safetensors --dtype float1", "--dtype float16"),
    ("lossxfer cka a.h5 --estimator deb", "--estimator debiased"),
    ("lossxfer probe a.h5 --method kn", "--method knn"),
    ("lossxfer report runs --table summ", "--table summary"),
    ("lossxfer report runs --format lat", "--format latex"),
]


@pytest.mark.parametrize(("line", "completed"), CHOICES, ids=[c[1] for c in CHOICES])
def test_choice_options_complete(term: Terminal, line: str, completed: str) -> None:
    screen = term.complete(line, re.escape(completed) + r"\b")
    assert line_of(screen, "$ ").endswith(completed)


def test_loss_opt_keys_of_the_chosen_loss(term: Terminal) -> None:
    """`key=` continues without a space, so the value follows directly."""
    line = "lossxfer train --loss label_smoothing --loss-opt al"
    screen = term.complete(line, r"alpha=0\.2", then=("Tab", "0.2"))
    assert line_of(screen, "$ ").endswith("--loss-opt alpha=0.2")
    screen = term.complete("lossxfer train --loss squared_error --loss-opt kap", "kappa=")
    assert line_of(screen, "$ ").endswith("--loss-opt kappa=")


def test_layers_from_the_checkpoint_architecture(term: Terminal) -> None:
    """A ResNet-18 checkpoint offers its 8 residual blocks (smallcnn has 3), read from the file."""
    line = "lossxfer extract run/model.safetensors --layers block"
    screen = term.complete(line, r"block8", then=("Tab", "Tab"))
    assert all(f"block{i}" in screen for i in range(1, 9)) and "block9" not in screen
    screen = term.complete("lossxfer extract run/model.safetensors --layers penultimate,lo",
                           "penultimate,logits")  # fmt: skip
    assert line_of(screen, "$ ").endswith("--layers penultimate,logits")


def test_report_baseline_and_layer_from_the_records(term: Terminal) -> None:
    screen = term.complete("lossxfer report records --baseline soft", "--baseline softmax")
    assert line_of(screen, "$ ").endswith("--baseline softmax")
    screen = term.complete("lossxfer report records --layer penu", "--layer penultimate")
    assert line_of(screen, "$ ").endswith("--layer penultimate")


def test_folders_continue_without_a_space(term: Terminal) -> None:
    screen = term.complete("lossxfer extract ru", r"run/model\.safetensors",
                           then=("Tab", "m", "Tab"))  # fmt: skip
    assert line_of(screen, "$ ").endswith("lossxfer extract run/model.safetensors")


def test_progress_and_log_lines_share_one_console(tmp_path: Path) -> None:
    """On a terminal the bar and the log lines (--debug: stages, configuration) go through one
    Rich console: no log line is ever drawn into a bar (`━━ 19/20 0:00:00[…] INFO …`)."""
    (tmp_path / ".bashrc").write_text(RC["bash"][1])
    term = Terminal("bash", tmp_path, tmp_path)
    try:
        data = "synthetic:classes=3,size=8,train=40,test=10"
        command = f"lossxfer train --data {data} --epochs 3 --batch-size 4 -o run --debug; echo END"
        term.tmux("send-keys", command, "Enter")
        term.wait(r"^END", "the end of the run", timeout=120)
        screen = term.tmux("capture-pane", "-p", "-S", "-200")
    finally:
        term.close()
    logs = [x for x in screen.splitlines() if re.search(r"\b(INFO|DEBUG)\b", x)]
    assert any("stage train" in x for x in logs) and any("configuration" in x for x in logs)
    assert not [x for x in logs if "━" in x or re.search(r"\d+/\d+ \d:\d\d:\d\d", x)], screen
