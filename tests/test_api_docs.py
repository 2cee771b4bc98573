"""The examples of docs/api.md run, in order, in one namespace (as a reader would paste them)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def examples() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", DOC.read_text(encoding="utf-8"), re.S | re.M)


def test_docs_api_shows_every_public_function_and_names_every_type() -> None:
    import inspect

    import lossxfer

    code, text = "\n".join(examples()), DOC.read_text(encoding="utf-8")
    unseen = [
        name
        for name in lossxfer._EXPORTS
        if not re.search(
            rf"\b{name}\b", code if inspect.isfunction(getattr(lossxfer, name)) else text
        )
    ]
    assert not unseen, f"docs/api.md lacks {unseen}"


@pytest.mark.slow
def test_docs_api_examples_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, object] = {"__name__": "docs_api"}
    here = Path.cwd()
    os.chdir(tmp_path)  # the examples write acts.h5 and separation.json
    try:
        for i, code in enumerate(examples()):
            try:
                exec(compile(code, f"docs/api.md example {i + 1}", "exec"), namespace)
            except Exception as exc:
                raise AssertionError(f"docs/api.md example {i + 1} failed:\n{code}") from exc
    finally:
        os.chdir(here)
    out = capsys.readouterr().out
    assert "CKA" in out and "unknown loss 'cosine_sofmax'" in out
