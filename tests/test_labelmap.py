"""Label maps: parsing, validation, and coarse-to-fine transfer end to end on digits."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lossxfer.checkpoint import CheckpointMeta, load_checkpoint
from lossxfer.data import load_data
from lossxfer.errors import InputError, UsageError
from lossxfer.labelmap import LabelMap, canonical, parse_label_map

PAIRS = "0,5:0;1,6:1;2,7:2;3,8:3;4,9:4"  # 5 superclasses of 2 digits each


def test_inline_json_and_csv_give_the_same_map(tmp_path: Path) -> None:
    as_json = tmp_path / "map.json"
    as_json.write_text(json.dumps({str(c): c % 5 for c in range(10)}))
    as_csv = tmp_path / "map.csv"
    as_csv.write_text("class,superclass\n" + "".join(f"{c},{c % 5}\n" for c in range(10)))
    expected = LabelMap(((0, 5), (1, 6), (2, 7), (3, 8), (4, 9)))
    for text in (PAIRS, str(as_json), str(as_csv)):
        assert parse_label_map(text) == expected
    assert canonical(str(as_json)) == PAIRS


def test_named_superclasses_keep_their_order_of_appearance() -> None:
    mapping = parse_label_map("5-9:animals;0-4:vehicles")
    assert mapping.groups == ((5, 6, 7, 8, 9), (0, 1, 2, 3, 4))
    assert mapping.names == ("animals", "vehicles")
    assert mapping.lookup(10) == [1] * 5 + [0] * 5


@given(st.lists(st.integers(0, 3), min_size=2, max_size=30))
def test_canonical_form_round_trips(targets: list[int]) -> None:
    used = sorted(set(targets))
    if len(used) < 2:
        return
    dense = [used.index(t) for t in targets]  # superclasses 0..G-1, each used
    mapping = parse_label_map(";".join(f"{c}:{t}" for c, t in enumerate(dense)))
    assert parse_label_map(str(mapping)) == mapping
    assert mapping.lookup(len(dense)) == dense


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0,5:0;1,6:1;2,7:2;3,8:3;4:4", "class 9 of digits is not mapped"),
        ("0,5:0;0,6:1;1-4,7-9:2", "class 0 is mapped twice"),
        ("0-4:0;5-9:2", "superclass 1 is empty"),
        ("0-9:0", "needs at least 2"),
        ("0-4:a;5-9:1", "all numbers or all names"),
        ("x:1;0-9:0", "bad class list"),
        ("0-4:0;5-10:1", "no class 10"),
        ("0-4;5-9:1", "expected CLASSES:SUPERCLASS"),
        ("missing.json", "no such file"),
    ],
)
def test_bad_maps_are_usage_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        load_data("digits", label_map=text)


def test_a_map_must_match_the_class_subset() -> None:
    with pytest.raises(UsageError, match="class 4 is mapped but not in --classes"):
        load_data("digits", [0, 1, 2, 3], label_map="0-4:0;5-9:1")
    data = load_data("digits", [0, 1, 2, 3], label_map="0,3:0;1,2:1")
    assert data.num_classes == 2


def test_bad_files_are_input_errors(tmp_path: Path) -> None:
    broken = tmp_path / "map.json"
    broken.write_text('{"0": ')
    rows = tmp_path / "map.csv"
    rows.write_text("0,1,2\n")
    for path in (broken, rows):
        with pytest.raises(InputError, match=path.name):
            parse_label_map(str(path))


def test_labels_are_superclasses_of_the_source_labels() -> None:
    fine = load_data("digits").split("train")
    coarse = load_data("digits", label_map=PAIRS).split("train")
    np.testing.assert_array_equal(coarse.index, fine.index)  # same rows, same val hold-out
    np.testing.assert_array_equal(coarse.labels, fine.labels % 5)


def test_checkpoint_rejects_a_map_that_disagrees_with_its_classes() -> None:
    meta = load_data("digits", label_map=PAIRS).describe()
    header = CheckpointMeta("smallcnn", "softmax", {}, 5, list(range(10)), _input(), meta, 0)
    CheckpointMeta.from_header(header.to_header(), "ok")  # consistent: accepted
    for bad in ({**meta, "label_map": "0-4:0;5-8:1"}, {**meta, "label_map": "0-9:"}):
        header = CheckpointMeta("smallcnn", "softmax", {}, 5, list(range(10)), _input(), bad, 0)
        with pytest.raises(InputError, match=r"label.map"):
            CheckpointMeta.from_header(header.to_header(), "bad")


def _input():  # type: ignore[no-untyped-def]
    return load_data("digits").input


def test_coarse_to_fine_end_to_end(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Train on 5 superclasses of 2 digits, extract, probe on the 10 fine digits."""
    run = tmp_path / "run"
    trained = cli("train", "--data", "digits", "--label-map", PAIRS, "--epochs", "2", "-o", run,
                  "--json")  # fmt: skip
    assert trained.code == 0, trained.stderr
    record = json.loads(trained.stdout)
    assert record["dataset"]["label"] == "digits{0,5|1,6|2,7|3,8|4,9}"
    assert record["dataset"]["label_map"] == PAIRS
    assert record["metrics"]["test_top1"] > 0.5  # 5-way task: chance is 0.2
    _, meta = load_checkpoint(run / "model.safetensors")
    assert (meta.num_classes, meta.classes) == (5, list(range(10)))
    assert meta.config["label_map"] == PAIRS

    fine = tmp_path / "fine.h5"
    extracted = cli("extract", run / "model.safetensors", "--data", "digits", "-o", fine, "-q")
    assert extracted.code == 0, extracted.stderr
    with h5py.File(fine, "r") as f:
        labels = f["test/labels"][:]
        assert f["test/logits"].shape[1] == 5
    np.testing.assert_array_equal(labels, load_data("digits").split("test").labels)
    assert set(labels.tolist()) == set(range(10))

    probed = cli("probe", fine, "--layer", "penultimate", "--method", "knn", "--json", "-q")
    assert probed.code == 0, probed.stderr
    probe = json.loads(probed.stdout)
    assert probe["dataset"]["label"] == "digits"
    assert probe["model"]["data"]["label_map"] == PAIRS  # which labels the model learned
    # 10-way accuracy well above both chance (0.1) and the 0.5 a coarse-only code would cap at
    assert probe["metrics"]["layers"]["penultimate"]["knn"]["test_top1"] > 0.7

    coarse = tmp_path / "coarse.h5"
    again = cli("extract", run / "model.safetensors", "--data", "digits", "--label-map", PAIRS,
                "--split", "test", "-o", coarse, "-q")  # fmt: skip
    assert again.code == 0, again.stderr
    with h5py.File(coarse, "r") as f:
        np.testing.assert_array_equal(f["test/labels"][:], labels % 5)

    for verb in ("extract", "finetune"):  # a bad map: exit 2, one line, nothing written
        bad = cli(verb, run / "model.safetensors", "--data", "digits", "--label-map", "0-9:0",
                  "-o", tmp_path / verb)  # fmt: skip
        assert bad.code == 2 and "needs at least 2" in bad.stderr, bad.stderr
        assert bad.stderr.strip().count("\n") == 0 and not (tmp_path / verb).exists()


def test_cli_rejects_a_bad_map_with_exit_2(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = cli("train", "--data", "digits", "--label-map", "0-4:0;4-9:1", "-o", tmp_path / "o")
    assert result.code == 2
    assert result.stderr.strip().count("\n") == 0
    assert "class 4 is mapped twice" in result.stderr
    assert not (tmp_path / "o").exists()
