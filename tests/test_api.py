"""The public API: the lazy export table, typed results, and the light `import lossxfer`."""

from __future__ import annotations

import ast
import dataclasses
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import lossxfer
from lossxfer.errors import InputError
from lossxfer.results import Record, Result

INIT = Path(lossxfer.__file__)
HEAVY = ("torch", "numpy", "h5py", "scipy", "sklearn", "matplotlib", "cupy", "timm")


def test_import_lossxfer_imports_nothing_heavy() -> None:
    code = "import sys, lossxfer; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = {name.split(".")[0] for name in out.stdout.split()}
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def _type_checking_imports() -> dict[str, str]:
    """name → module of the `if TYPE_CHECKING:` re-exports in lossxfer/__init__.py."""
    tree = ast.parse(INIT.read_text())
    block = next(
        n for n in tree.body if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n)
    )
    out = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names:
            assert alias.asname == alias.name, f"{alias.name}: re-export as `import X as X`"
            out[alias.name] = node.module
    return out


def test_type_checking_imports_equal_the_export_table() -> None:
    assert _type_checking_imports() == lossxfer._EXPORTS


@pytest.mark.parametrize("name", sorted(lossxfer._EXPORTS))
def test_every_exported_name_resolves_to_its_module(name: str) -> None:
    obj = getattr(lossxfer, name)
    assert getattr(obj, "__module__", lossxfer._EXPORTS[name]) == lossxfer._EXPORTS[name]
    assert name in dir(lossxfer) and name in lossxfer.__all__


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'cka_typo'"):
        _ = lossxfer.cka_typo  # type: ignore[attr-defined]


def test_py_typed_is_shipped() -> None:
    assert (INIT.parent / "py.typed").exists()
    assert 'lossxfer = ["py.typed"]' in (INIT.parent.parent / "pyproject.toml").read_text()


@dataclasses.dataclass
class _Piece(Record):
    score: float | None
    curve: list[dict[str, Any]]
    label: str = "x"
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Strict(Record):
    score: float


def test_record_round_trip_and_extra_keys_at_top_level() -> None:
    piece = _Piece(0.5, [{"value": 1.0}], extra={"vote": "weighted"})
    data = piece.to_dict()
    assert data == {"score": 0.5, "curve": [{"value": 1.0}], "label": "x", "vote": "weighted"}
    assert _Piece.from_dict(data) == piece
    assert _Piece(float("nan"), []).to_dict()["score"] is None  # JSON: NaN → null


def test_record_from_dict_rejects_missing_and_unknown_keys() -> None:
    with pytest.raises(InputError, match=r"r\.json: _Strict lacks score"):
        _Strict.from_dict({}, source="r.json")
    with pytest.raises(InputError, match="_Strict has no field 'vote'"):
        _Strict.from_dict({"score": 1.0, "vote": "x"})
    with pytest.raises(InputError, match="expected a JSON object"):
        _Strict.from_dict([1.0])  # type: ignore[arg-type]


def _render(obj: object) -> str:
    console = Console(file=io.StringIO(), width=100)
    console.print(obj)
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_records_and_results_render_for_rich() -> None:
    text = _render(_Piece(0.123456, [{"value": 1.0}, {"value": 2.0}], extra={"vote": "w"}))
    assert "_Piece" in text and "0.1235" in text and "[2 items]" in text and "vote" in text
    result = Result(
        kind="separation",
        metrics={"split": "test", "layers": {"penultimate": {"r2": 0.25}}},
        model={"arch": "smallcnn", "objective": "softmax"},
        dataset={"label": "digits[0-9]"},
    )
    text = _render(result)
    assert "separation result" in text and "smallcnn softmax" in text
    assert "layers.penultimate.r2" in text and "0.25" in text and "digits[0-9]" in text
