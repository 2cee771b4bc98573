"""The result record: one JSON document per measurement (docs/formats.md), and typed results.

`report` needs nothing but these records, so everything needed to group and compare results
(model provenance, evaluated dataset, configuration) is stored in each one.

The library's array functions (`class_separation`, `linear_probe`, ...) return `Record`
subclasses: dataclasses whose fields are the keys of their piece of a record (one layer's
separation metrics, one probe method's numbers). The store runners build their records from
the same objects, so the notebook and the CLI cannot disagree about names or numbers.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from lossxfer import __version__
from lossxfer.errors import InputError
from lossxfer.formats import RESULT, check_format
from lossxfer.fsio import require_file, sha256, write_text_atomic

if TYPE_CHECKING:
    from rich.table import Table

KINDS = ("train", "extract", "probe", "finetune", "cka", "separation")


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclasses.dataclass
class Result:
    kind: str
    metrics: dict[str, Any]
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    inputs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    model: dict[str, Any] = dataclasses.field(default_factory=dict)
    dataset: Any = None
    timing: dict[str, Any] = dataclasses.field(default_factory=dict)
    created: str = dataclasses.field(default_factory=now)
    lossxfer_version: str = __version__
    format: str = RESULT

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict; NaN and infinity become None (null)."""
        out = to_jsonable({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        assert isinstance(out, dict)
        return out

    def to_json(self, indent: int | None = 2) -> str:
        return dumps(self.to_dict(), indent=indent)

    def write(self, path: str | os.PathLike[str], force: bool = False) -> Path:
        return write_text_atomic(path, self.to_json() + "\n", force=force)

    @classmethod
    def from_dict(cls, data: Any, source: object = "result") -> Result:
        if not isinstance(data, dict):
            raise InputError(f"{source}: not a lossxfer result record (not a JSON object)")
        check_format(data.get("format"), RESULT, source)
        if data.get("kind") not in KINDS:
            raise InputError(f"{source}: unknown result kind {data.get('kind')!r}")
        if not isinstance(data.get("metrics"), dict):
            raise InputError(f"{source}: result record has no 'metrics' object")
        names = {f.name for f in dataclasses.fields(cls)}
        expected_types = {"config": dict, "inputs": list, "model": dict, "timing": dict}
        for key, typ in expected_types.items():
            if key in data and not isinstance(data[key], typ):
                raise InputError(f"{source}: field {key!r} must be a JSON {typ.__name__}")
        return cls(**{k: v for k, v in data.items() if k in names})

    def __rich__(self) -> Table:
        """A summary for Rich and notebooks: provenance, then every scalar metric."""
        label = self.dataset.get("label") if isinstance(self.dataset, dict) else None
        rows = {
            "model": " ".join(str(self.model[k]) for k in ("arch", "objective") if k in self.model),
            "dataset": label,
            **_flatten(self.metrics),
        }
        return _table(f"{self.kind} result", rows)


R = TypeVar("R", bound="Record")


class Record:
    """Base of the typed results: a dataclass whose fields are the keys of its piece of a
    `lossxfer.result/1` record. A field `extra: dict` carries method-specific keys, which
    `to_dict` writes beside the fields and `from_dict` collects."""

    def to_dict(self) -> dict[str, Any]:
        """The piece of the record, JSON-ready (NaN and infinity become None)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        extra = data.pop("extra", {})
        out = to_jsonable({**data, **extra})
        assert isinstance(out, dict)
        return out

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any], source: object = "result") -> R:
        """Read the piece back; a missing field, or an unknown key without `extra`, is an
        InputError naming `source`."""
        if not isinstance(data, Mapping):
            raise InputError(f"{source}: expected a JSON object for {cls.__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        known = {k: v for k, v in data.items() if k in fields and k != "extra"}
        rest = {k: v for k, v in data.items() if k not in known}
        missing = [
            name
            for name, f in fields.items()
            if name not in known
            and name != "extra"
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise InputError(f"{source}: {cls.__name__} lacks {', '.join(missing)}")
        if rest and "extra" not in fields:
            raise InputError(f"{source}: {cls.__name__} has no field {sorted(rest)[0]!r}")
        return cls(**known, **({"extra": rest} if "extra" in fields else {}))

    def __rich__(self) -> Table:
        """Scalars as they are; lists and tables summarised (`to_dict()` has them all)."""
        return _table(type(self).__name__, _flatten(self.to_dict()))


SUMMARY_ITEMS = 8  # nested dicts up to this size are shown entry by entry


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts → 'a.b' keys; lists and long dicts (per class, ...) become their length:
    a summary, not the data."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and len(value) <= SUMMARY_ITEMS:
            out.update(_flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple, Mapping)):
            out[name] = f"[{len(value)} items]"
        else:
            out[name] = value
    return out


def _table(title: str, rows: Mapping[str, Any]) -> Table:
    from rich.box import SIMPLE_HEAD
    from rich.table import Table

    table = Table(title=title, box=SIMPLE_HEAD, show_header=False, pad_edge=False)
    table.add_column(no_wrap=True)
    table.add_column()
    for key, value in rows.items():
        if value is not None and value != "":
            table.add_row(key, format(value, ".4g") if isinstance(value, float) else str(value))
    return table


MAX_RECORD_BYTES = 64 << 20  # records are small; `report DIR` may meet big foreign *.json


def load_result(path: str | os.PathLike[str]) -> Result:
    p = require_file(path)
    if p.stat().st_size > MAX_RECORD_BYTES:
        raise InputError(f"{p}: {p.stat().st_size >> 20} MiB is too large for a result record")
    try:
        # NaN/Infinity are not JSON; lossxfer writes them as null, so read them as null too.
        data = json.loads(p.read_text(encoding="utf-8"), parse_constant=lambda _: None)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{p}: not a lossxfer result record (invalid JSON: {exc})") from None
    return Result.from_dict(data, source=p)


def input_record(path: str | os.PathLike[str]) -> dict[str, str]:
    """{path, sha256} of an input file, for provenance."""
    return {"path": str(path), "sha256": sha256(path)}


def to_jsonable(obj: Any) -> Any:
    """Recursively convert to JSON types: NaN/inf → None, numpy/torch scalars and arrays → lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist"):  # numpy / torch scalars and arrays, without importing them
        return to_jsonable(obj.tolist())
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def dumps(obj: Any, indent: int | None = 2) -> str:
    return json.dumps(to_jsonable(obj), indent=indent, allow_nan=False)
