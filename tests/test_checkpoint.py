"""Checkpoints: bit-exact round trip, and every kind of bad file is exit 3 with a clear line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lossxfer.checkpoint import (
    CheckpointMeta,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
    verify_checkpoint,
)
from lossxfer.errors import InputError
from lossxfer.inputs import InputSpec
from lossxfer.models import build_network
from lossxfer.nets import Network
from lossxfer.objectives import make_objective


def make_checkpoint(
    path: Path,
    arch: str = "smallcnn",
    objective: str = "softmax",
    opts: dict[str, object] | None = None,
    classes: tuple[int, ...] = (0, 1, 2),
    input_spec: InputSpec | None = None,
    seed: int = 0,
    data: str = "synthetic:classes=5,size=8",
) -> tuple[Network, CheckpointMeta]:
    """A randomly initialised network with non-trivial BatchNorm statistics, saved to `path`."""
    torch.manual_seed(seed)
    spec = input_spec or InputSpec(1, 8, (0.5,), (0.29,))
    obj = make_objective(objective, opts)
    network = build_network(arch, spec, obj, len(classes))
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
    meta = CheckpointMeta(
        arch=arch,
        objective=objective,
        objective_opts=obj.options(),
        num_classes=len(classes),
        classes=list(classes),
        input=spec,
        data={"spec": data, "classes": list(classes), "label": "synthetic[0-2]"},
        seed=seed,
        config={"epochs": 1, "lr": 0.1},
        metrics={"test_top1": 0.5},
    )
    save_checkpoint(path, network, meta)
    return network.eval(), meta


@pytest.mark.parametrize(
    ("arch", "objective"), [("smallcnn", "cosine_softmax"), ("resnet18", "softmax")]
)
def test_round_trip_is_bit_exact(tmp_path: Path, arch: str, objective: str) -> None:
    path = tmp_path / "model.safetensors"
    network, meta = make_checkpoint(path, arch, objective)
    loaded, meta2 = load_checkpoint(path)
    assert meta2 == meta
    assert read_metadata(path) == meta
    original, restored = network.state_dict(), loaded.state_dict()
    assert list(original) == list(restored)
    for key, value in original.items():
        assert torch.equal(value, restored[key]), key
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(network(x), loaded.eval()(x))
    verified, values = verify_checkpoint(path)
    assert verified == meta
    assert values == sum(v.numel() for v in original.values())


def test_existing_checkpoint_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    network, meta = make_checkpoint(path)
    before = path.read_bytes()
    with pytest.raises(Exception, match="exists"):
        save_checkpoint(path, network, meta)
    assert path.read_bytes() == before


def _rewrite(path: Path, tensors_edit=None, meta_edit=None) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        header = dict(fh.metadata())
    tensors = load_file(str(path))
    if tensors_edit:
        tensors_edit(tensors)
    if meta_edit:
        meta_edit(header)
    path.unlink()
    save_file(tensors, str(path), metadata=header)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _foreign(path: Path) -> None:
    path.unlink()
    save_file({"weight": torch.zeros(3)}, str(path), metadata={"producer": "someone else"})


def _png(path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(64))


BAD = {
    "truncated": (_truncate, "not a readable safetensors file"),
    "foreign": (_foreign, "not a lossxfer.checkpoint file"),
    "png": (_png, "not a lossxfer file"),
    "missing tensor": (
        lambda p: _rewrite(p, tensors_edit=lambda t: t.pop("head.bias")),
        "missing ['head.bias']",
    ),
    "extra tensor": (
        lambda p: _rewrite(p, tensors_edit=lambda t: t.update(extra=torch.zeros(1))),
        "unexpected ['extra']",
    ),
    "wrong shape": (
        lambda p: _rewrite(p, tensors_edit=lambda t: t.update({"head.bias": torch.zeros(4)})),
        "'head.bias' is float32 (4,), the model needs float32 (3,)",
    ),
    "bad json field": (
        lambda p: _rewrite(p, meta_edit=lambda h: h.update(objective_opts="{not json")),
        "metadata 'objective_opts' is malformed",
    ),
    "newer version": (
        lambda p: _rewrite(p, meta_edit=lambda h: h.update(format="lossxfer.checkpoint/2")),
        "a newer format version '2'",
    ),
    "unknown arch": (
        lambda p: _rewrite(p, meta_edit=lambda h: h.update(arch="resnet5")),
        "did you mean 'resnet50'",
    ),
}


TENSOR_LEVEL = {"missing tensor", "extra tensor", "wrong shape"}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_checkpoint_is_exit_3(tmp_path: Path, cli, case: str) -> None:
    path = tmp_path / "model.safetensors"
    make_checkpoint(path)
    damage, message = BAD[case]
    damage(path)
    if case in TENSOR_LEVEL:  # `info` reads the header only, without torch; the loader checks
        with pytest.raises(InputError, match=re.escape(message)):
            load_checkpoint(path)
        return
    run = cli("info", path)
    assert run.code == 3, run.stderr
    assert str(path) in run.stderr and message in run.stderr
    assert run.stderr.count("\n") == 1 and not run.stdout
    if case != "png":  # the loader itself (extract, finetune) says the same
        with pytest.raises(InputError, match=re.escape(message)):
            load_checkpoint(path)


def test_metadata_header_is_plain_strings(tmp_path: Path) -> None:
    """Other tools (safetensors, HF) can read the header: every value is a string."""
    path = tmp_path / "model.safetensors"
    make_checkpoint(path)
    length = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8 : 8 + length])["__metadata__"]
    assert header["format"] == "lossxfer.checkpoint/1"
    assert json.loads(header["classes"]) == [0, 1, 2]
    assert all(isinstance(v, str) for v in header.values())


def test_a_header_length_ending_in_0x80_is_not_taken_for_a_pickle(tmp_path: Path) -> None:
    """The first byte of a safetensors file is the low byte of its header length: 0x80 (the
    pickle protocol marker) for 1 file in 256; such a checkpoint was refused as pickled."""
    from lossxfer.sniff import sniff

    path = tmp_path / "x.safetensors"
    for pad in range(300):
        save_file({"w": torch.zeros(2)}, str(path), metadata={"format": "x", "pad": "p" * pad})
        if path.read_bytes()[:1] == b"\x80":
            break
    assert path.read_bytes()[:1] == b"\x80"
    assert sniff(path) == "safetensors"
    pickled = tmp_path / "p.pth"
    torch.save({"w": torch.zeros(2)}, pickled, _use_new_zipfile_serialization=False)
    assert pickled.read_bytes()[:1] == b"\x80" and sniff(pickled) == "pickle"


def test_a_model_saved_before_its_run_ended_is_refused(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    """0.1 wrote model.safetensors after every epoch: such a file (3 of 8 epochs done) is refused
    by every reader with exit 3 and a line naming --resume; a finished one is accepted."""
    from safetensors import safe_open

    run = tmp_path / "run"
    data = "synthetic:classes=3,size=8,train=10,test=6"
    done = cli("train", "--data", data, "--epochs", 1, "-o", run, "-q", "--device", "cpu")
    assert done.code == 0, done.stderr
    model = run / "model.safetensors"
    assert cli("info", model).code == 0
    with safe_open(str(model), "pt") as fh:
        meta = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    config, metrics = json.loads(meta["config"]), json.loads(meta["metrics"])
    config["optim"]["epochs"], metrics["epochs"] = 8, 3
    meta.update(config=json.dumps(config), metrics=json.dumps(metrics))
    partial = tmp_path / "partial.safetensors"
    save_file(tensors, str(partial), metadata=meta)
    for args in (["info", partial], ["extract", partial, "--data", data, "-o", tmp_path / "a.h5"]):
        run_ = cli(*args)
        assert run_.code == 3, run_.stderr
        assert "unfinished run (3 of 8 epochs)" in run_.stderr and "--resume" in run_.stderr
        assert run_.stderr.count("\n") == 1
    assert not (tmp_path / "a.h5").exists()
