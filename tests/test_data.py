"""Data specs, class subsets, the validation split, transforms, and every dataset reader.

Each file-backed dataset is read from a miniature copy in its real on-disk layout, written here.
"""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from scipy.io import savemat

from lossxfer.classes import format_classes, parse_classes
from lossxfer.cli.common import data_spec
from lossxfer.cli.completion import complete_data
from lossxfer.data import held_out, load_data, with_classes
from lossxfer.datasets import DATASETS, IN_MEMORY, DataSpec, read_idx
from lossxfer.errors import InputError, UsageError
from lossxfer.inputs import InputSpec
from lossxfer.transforms import Normalize, build_transform

# -- specs and class subsets ------------------------------------------------------------------


@given(st.sets(st.integers(0, 300), min_size=1))
def test_format_then_parse_classes_round_trips(ids: set[int]) -> None:
    assert parse_classes(format_classes(sorted(ids))) == sorted(ids)


def test_parse_classes() -> None:
    assert parse_classes("0-4,7") == [0, 1, 2, 3, 4, 7]
    assert format_classes([7, 0, 1, 2]) == "0-2,7"
    assert parse_classes(None) is None
    for empty in ("", " "):  # an unset shell variable is not "all classes"
        with pytest.raises(UsageError, match="no class given"):
            parse_classes(empty)
    for bad in ("9-3", "a", "1,1", "2-"):
        with pytest.raises(UsageError) as err:
            parse_classes(bad)
        assert err.value.exit_code == 2


def test_unknown_dataset_is_a_usage_error_with_a_suggestion() -> None:
    with pytest.raises(UsageError, match="did you mean 'cifar10'") as err:
        DataSpec.parse("cifar01:/data")
    assert err.value.exit_code == 2


def test_spec_roots(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert DataSpec.parse("cifar10:/x") == DataSpec("cifar10", "/x")
    assert DataSpec.parse("cifar10", default_root="/d").root == "/d/cifar10"
    assert DataSpec.parse("cifar10:/x", default_root="/d").root == "/x"
    assert DataSpec.parse("digits", default_root="/d") == DataSpec("digits")
    assert str(DataSpec.parse("synthetic:classes=3,size=8")) == "synthetic:classes=3,size=8"
    with pytest.raises(UsageError, match="takes no folder"):
        DataSpec.parse("digits:/x")
    with pytest.raises(UsageError, match="key=integer"):
        DataSpec.parse("synthetic:classes=many")
    monkeypatch.setenv("LOSSXFER_DATA_ROOT", str(tmp_path))
    assert data_spec("mnist").root == str(tmp_path / "mnist")
    assert DataSpec.parse("mnist").root is None  # the library never reads the environment
    assert complete_data("cifar") == ["cifar10", "cifar100"]


def test_dataset_without_a_folder_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="cifar10:PATH"):
        load_data("cifar10")


def test_class_subset_reindexes_labels_and_records_source_ids() -> None:
    data = load_data("digits", classes=[7, 2, 5], val_fraction=0.0)
    assert data.classes == [2, 5, 7] and data.num_classes == 3
    test = data.split("test")
    assert sorted(set(test.labels.tolist())) == [0, 1, 2]
    source_labels = data.source.labels["test"][test.index]
    assert np.array_equal(np.array([2, 5, 7])[test.labels], source_labels)
    assert data.label == "digits[2,5,7]"
    assert with_classes(data, [0, 1]).split("test").labels.max() == 1


@pytest.mark.parametrize("classes", [[], [10], [3, 12]])
def test_bad_class_subset_is_a_usage_error(classes: list[int]) -> None:
    with pytest.raises(UsageError) as err:
        load_data("digits", classes=classes)
    assert err.value.exit_code == 2


def test_describe_records_provenance() -> None:
    spec = "synthetic:classes=4,size=8"
    data = load_data(spec, classes=[1, 3], val_fraction=0.2, split_seed=5)
    assert data.describe() == {
        "spec": spec,
        "classes": [1, 3],
        "label": "synthetic[1,3]",
        "val_fraction": 0.2,
        "split_seed": 5,
        "class_names": None,
        "label_map": None,
    }


# -- built-in sources ---------------------------------------------------------------------------


def test_digits_fixed_split() -> None:
    data = load_data("digits", val_fraction=0.1)
    train, val, test = (data.split(s) for s in ("train", "val", "test"))
    assert (len(train) + len(val), len(test)) == (1437, 360)
    assert data.input == InputSpec(1, 8, (0.3053,), (0.3760,))
    assert np.array_equal(np.sort(np.concatenate([train.index, val.index])), np.arange(1437))


def test_digits_are_scikit_learns_without_importing_it() -> None:
    """Read from the CSV scikit-learn ships, equal to load_digits(), and sklearn stays unloaded."""
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    from lossxfer.data import DataSpec
    from lossxfer.datasets import DATASETS

    source = DATASETS.get("digits")(DataSpec.parse("digits"), False)
    bunch = load_digits()
    for name, rows in (("train", np.arange(1797) % 5 != 0), ("test", np.arange(1797) % 5 == 0)):
        images = torch.stack([source.splits[name][i][0] for i in range(len(source.labels[name]))])
        expected = torch.from_numpy((bunch.images[rows] / 16.0).astype(np.float32)).unsqueeze(1)
        assert torch.equal(images, expected)
        assert np.array_equal(source.labels[name], bunch.target[rows])
    code = (
        "import sys\nfrom lossxfer.data import load_data\nload_data('digits')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_synthetic_is_deterministic_by_seed() -> None:
    def images(spec: str) -> torch.Tensor:
        batch = load_data(spec).split("test").dataset.tensors()
        assert batch is not None
        return batch[0]

    a, b = images("synthetic:seed=1,size=4"), images("synthetic:seed=1,size=4")
    assert torch.equal(a, b)
    assert not torch.equal(a, images("synthetic:seed=2,size=4"))
    assert a.shape == (200, 1, 4, 4)


# -- the validation split -----------------------------------------------------------------------


def test_val_split_is_disjoint_stratified_and_keeps_train_positions() -> None:
    data = load_data("digits", val_fraction=0.2, split_seed=3)
    train, val = data.split("train"), data.split("val")
    assert not set(train.index) & set(val.index)
    assert np.array_equal(data.source.labels["train"][val.index], val.labels)
    counts = np.bincount(val.labels) / np.bincount(data.source.labels["train"])
    assert np.allclose(counts, 0.2, atol=0.02)
    other = load_data("digits", val_fraction=0.2, split_seed=4).split("val")
    assert set(other.index) != set(val.index)


def test_held_out_is_pinned_and_independent_of_other_classes() -> None:
    labels = np.repeat([0, 1], 10)
    mask = held_out(np.arange(20), labels, 0.3, seed=0)
    # Golden value: the split must not change between versions (stores record row ids).
    assert np.flatnonzero(mask).tolist() == [0, 3, 7, 10, 14, 15]
    assert np.flatnonzero(mask).tolist() == python_held_out(20, 10, 3, seed=0)
    only_one = held_out(np.arange(10, 20), labels[10:], 0.3, seed=0)
    assert np.array_equal(only_one, mask[10:])


def python_held_out(n: int, per_class: int, take: int, seed: int) -> list[int]:
    """Reference in plain Python integers: splitmix64 keys, smallest `take` per class."""
    mask64 = (1 << 64) - 1

    def splitmix(x: int) -> int:
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask64
        return x ^ (x >> 31)

    keys = [splitmix(row ^ splitmix(seed)) for row in range(n)]
    classes = [range(c, c + per_class) for c in range(0, n, per_class)]
    return sorted(r for rows in classes for r in sorted(rows, key=keys.__getitem__)[:take])


def test_held_out_never_takes_a_whole_class() -> None:
    mask = held_out(np.arange(3), np.array([0, 1, 1]), 0.9, seed=0)
    assert mask.tolist().count(True) == 1 and not mask[0]


def test_no_val_split_when_fraction_is_zero() -> None:
    data = load_data("digits", val_fraction=0.0)
    assert len(data.split("train")) == 1437
    with pytest.raises(UsageError, match="no val split"):
        data.split("val")
    with pytest.raises(UsageError):
        load_data("digits", val_fraction=1.0)


# -- transforms ---------------------------------------------------------------------------------


def test_small_tensor_images_are_only_normalised() -> None:
    data = load_data("synthetic:classes=2,size=8,channels=3")
    train = data.split("train", augment=True)
    item, _ = train.dataset[0]
    raw, _ = data.source.splits["train"][int(train.index[0])]
    assert isinstance(train.dataset.transform, Normalize)
    assert torch.allclose(item, (raw - 0.5) / 0.29)


def test_large_image_transforms_follow_reference() -> None:
    spec = InputSpec(3, 224, (0.5,) * 3, (0.25,) * 3)
    image = Image.new("RGB", (300, 256), (255, 0, 0))
    evaluated = build_transform(spec, augment=False)(image)
    assert evaluated.shape == (3, 224, 224)
    assert torch.allclose(evaluated[0], torch.full((224, 224), 2.0), atol=1e-3)  # (1-.5)/.25
    torch.manual_seed(0)
    assert build_transform(spec, augment=True)(image).shape == (3, 224, 224)


# -- file-backed datasets: miniature copies in their real layouts ------------------------------


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def write_mnist(folder: Path, gz: bool, rng: np.random.Generator) -> dict[str, np.ndarray]:
    ext = ".gz" if gz else ""
    arrays = {}
    for prefix, n in (("train", 12), ("t10k", 5)):
        images = rng.integers(0, 256, (n, 28, 28))
        labels = np.arange(n) % 10
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels)
        arrays[prefix] = images
    return arrays


@pytest.mark.parametrize(
    ("name", "sub", "gz"), [("mnist", "MNIST/raw", True), ("kmnist", "", False)]
)
def test_mnist_family_reads_raw_idx(tmp_path: Path, name: str, sub: str, gz: bool) -> None:
    arrays = write_mnist(tmp_path / sub, gz, np.random.default_rng(0))
    data = load_data(f"{name}:{tmp_path}", val_fraction=0.0)
    assert data.input.size == 28 and data.input.channels == 1 and data.num_classes == 10
    test = data.split("test")
    assert len(test) == 5 and test.labels.tolist() == [0, 1, 2, 3, 4]
    raw, _ = data.source.splits["test"][3]
    assert torch.allclose(raw[0], torch.from_numpy(arrays["t10k"][3] / 255.0).float())
    fast = test.dataset.tensors()
    assert fast is not None and torch.allclose(fast[0][3], test.dataset[3][0])


def test_generic_idx_folder_computes_classes_and_normalisation(tmp_path: Path) -> None:
    images = np.zeros((6, 5, 5))
    images[:3] = 255
    write_idx(tmp_path / "emnist-letters-train-images-idx3-ubyte", images)
    write_idx(tmp_path / "emnist-letters-train-labels-idx1-ubyte", np.array([0, 1, 2, 3, 0, 1]))
    write_idx(tmp_path / "emnist-letters-test-images-idx3-ubyte", images[:2])
    write_idx(tmp_path / "emnist-letters-test-labels-idx1-ubyte", np.array([4, 0]))
    data = load_data(f"idx:{tmp_path}")
    assert data.num_classes == 5
    assert (data.input.size, data.input.mean) == (5, (0.5,))
    assert data.input.std[0] == pytest.approx(0.5, abs=0.02)


def test_bad_idx_files_are_input_errors(tmp_path: Path) -> None:
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x01abcd")
    with pytest.raises(InputError, match="not an unsigned-byte idx"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", np.zeros(4))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
    with pytest.raises(InputError, match="expected 4 values, found 3"):
        read_idx(tmp_path / "short")


def cifar_records(labels: list[list[int]], rng: np.random.Generator) -> tuple[bytes, np.ndarray]:
    pixels = rng.integers(0, 256, (len(labels), 3, 32, 32), dtype=np.uint8)
    rows = [bytes(label) + p.tobytes() for label, p in zip(labels, pixels, strict=True)]
    return b"".join(rows), pixels


def test_cifar10_binary_batches(tmp_path: Path) -> None:
    base = tmp_path / "cifar-10-batches-bin"
    base.mkdir()
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        data, _ = cifar_records([[i], [9]], rng)
        (base / f"data_batch_{i}.bin").write_bytes(data)
    data, pixels = cifar_records([[3], [4], [5]], rng)
    (base / "test_batch.bin").write_bytes(data)
    (base / "batches.meta.txt").write_text("\n".join(f"class{i}" for i in range(10)) + "\n\n")
    loaded = load_data(f"cifar10:{tmp_path}", classes=[3, 4, 5, 9], val_fraction=0.0)
    assert loaded.source.labels["train"].tolist() == [1, 9, 2, 9, 3, 9, 4, 9, 5, 9]
    assert loaded.class_names == ["class3", "class4", "class5", "class9"]
    assert loaded.input == InputSpec(3, 32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    raw, label = loaded.source.splits["test"][1]
    assert label == 4 and torch.allclose(raw * 255, torch.from_numpy(pixels[1]).float())
    (base / "test_batch.bin").write_bytes(data[:-1])
    with pytest.raises(InputError, match="whole number of 3073-byte records"):
        load_data(f"cifar10:{tmp_path}")


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    base = tmp_path / "cifar-100-binary"
    base.mkdir()
    rng = np.random.default_rng(1)
    (base / "train.bin").write_bytes(cifar_records([[1, 99], [2, 0]], rng)[0])
    (base / "test.bin").write_bytes(cifar_records([[3, 42]], rng)[0])
    data = load_data(f"cifar100:{base}", val_fraction=0.0)
    assert data.num_classes == 100 and data.source.labels["test"].tolist() == [42]
    assert data.source.labels["train"].tolist() == [99, 0]


def test_svhn_mat_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (32, 32, 3, 4), dtype=np.uint8)  # MATLAB H×W×C×N
    for split in ("train", "test"):
        savemat(
            tmp_path / f"{split}_32x32.mat", {"X": images, "y": np.array([[10], [1], [2], [9]])}
        )
    data = load_data(f"svhn:{tmp_path}", val_fraction=0.0)
    assert data.source.labels["test"].tolist() == [0, 1, 2, 9]
    raw, _ = data.source.splits["test"][2]
    expected = torch.from_numpy(images[:, :, :, 2].transpose(2, 0, 1).astype(np.float32))
    assert torch.allclose(raw * 255, expected)


def test_stl10_binary_is_column_major(tmp_path: Path) -> None:
    base = tmp_path / "stl10_binary"
    base.mkdir()
    pixels = np.zeros((2, 3, 96, 96), dtype=np.uint8)
    pixels[1, 0, 5, 7] = 200  # row 5, column 7 of the red plane of image 1
    for split in ("train", "test"):
        base.joinpath(f"{split}_X.bin").write_bytes(pixels.transpose(0, 1, 3, 2).tobytes())
        base.joinpath(f"{split}_y.bin").write_bytes(bytes([1, 10]))
    data = load_data(f"stl10:{tmp_path}", val_fraction=0.0)
    assert data.source.labels["train"].tolist() == [0, 9] and data.input.size == 96
    image = data.split("test").dataset.base[1][0]
    assert image[0, 5, 7] == pytest.approx(200 / 255)
    assert build_transform(data.input, True, tensor_images=True)(image).shape == (3, 96, 96)


def write_jpg(path: Path, value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 16), (value, 0, 0)).save(path)


def make_food101(root: Path) -> tuple[int, int]:
    base = root / "food-101"
    listing = {"train": {"apple_pie": ["apple_pie/1", "apple_pie/2"], "bibimbap": ["bibimbap/3"]}}
    listing["test"] = {"bibimbap": ["bibimbap/4"], "apple_pie": ["apple_pie/5"]}
    for split, by_class in listing.items():
        (base / "meta").mkdir(parents=True, exist_ok=True)
        (base / "meta" / f"{split}.json").write_text(json.dumps(by_class))
        for rels in by_class.values():
            for rel in rels:
                write_jpg(base / "images" / f"{rel}.jpg")
    return 3, 2


def make_flowers102(root: Path) -> tuple[int, int]:
    base = root / "flowers-102"
    for i in range(1, 7):
        write_jpg(base / "jpg" / f"image_{i:05d}.jpg")
    savemat(base / "imagelabels.mat", {"labels": np.array([1, 2, 102, 1, 2, 3])})
    savemat(base / "setid.mat", {"trnid": [1, 2, 3], "valid": [4], "tstid": [5, 6]})
    return 3, 2


def make_oxford_pets(root: Path) -> tuple[int, int]:
    base = root / "oxford-iiit-pet"
    rows = {
        "trainval": ["Abyssinian_1 1 1 1", "great_pyrenees_2 2 2 1"],
        "test": ["Abyssinian_3 1 1 1"],
    }
    for split, lines in rows.items():
        (base / "annotations").mkdir(parents=True, exist_ok=True)
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
        for line in lines:
            write_jpg(base / "images" / f"{line.split()[0]}.jpg")
    return 2, 1


def make_stanford_cars(root: Path) -> tuple[int, int]:
    base = root / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    savemat(
        base / "devkit" / "cars_meta.mat",
        {"class_names": np.array(["A car", "B car"], dtype=object)},
    )
    anno = np.dtype([("fname", object), ("class", object)])
    train = np.array([("00001.jpg", 1), ("00002.jpg", 2)], dtype=anno)
    test = np.array([("00001.jpg", 2), ("00002.jpg", 1)], dtype=anno)
    savemat(base / "devkit" / "cars_train_annos.mat", {"annotations": train})
    savemat(base / "cars_test_annos_withlabels.mat", {"annotations": test})
    for split in ("train", "test"):
        for name in ("00001.jpg", "00002.jpg"):
            write_jpg(base / f"cars_{split}" / name)
    return 2, 2


def make_dtd(root: Path) -> tuple[int, int]:
    base = root / "dtd" / "dtd"
    listing = {"train": ["banded/b1.jpg", "zigzagged/z1.jpg"], "val": ["banded/b2.jpg"]}
    listing["test"] = ["zigzagged/z2.jpg"]
    for split, rels in listing.items():
        (base / "labels").mkdir(parents=True, exist_ok=True)
        (base / "labels" / f"{split}1.txt").write_text("\n".join(rels) + "\n")
        for rel in rels:
            write_jpg(base / "images" / rel)
    return 2, 1


def make_sun397(root: Path) -> tuple[int, int]:
    base = root / "SUN397"
    base.mkdir(parents=True)
    (base / "ClassName.txt").write_text("/a/abbey\n/b/bar/indoor\n")
    listing = {"Training_01.txt": ["/a/abbey/sun_a.jpg", "/b/bar/indoor/sun_b.jpg"]}
    listing["Testing_01.txt"] = ["/b/bar/indoor/sun_c.jpg"]
    (root / "Partitions").mkdir(parents=True)
    for name, rels in listing.items():
        (root / "Partitions" / name).write_text("\n".join(rels) + "\n")
        for rel in rels:
            write_jpg(base / rel.lstrip("/"))
    return 2, 1


NATURAL = {
    "food101": (make_food101, ["apple_pie", "bibimbap"]),
    "flowers102": (make_flowers102, None),
    "oxford-pets": (make_oxford_pets, ["Abyssinian", "Great Pyrenees"]),
    "stanford-cars": (make_stanford_cars, ["A car", "B car"]),
    "dtd": (make_dtd, ["banded", "zigzagged"]),
    "sun397": (make_sun397, ["abbey", "bar/indoor"]),
}


@pytest.mark.parametrize("name", NATURAL)
def test_natural_image_datasets_read_their_split_lists(tmp_path: Path, name: str) -> None:
    make, class_names = NATURAL[name]
    n_train, n_test = make(tmp_path)
    data = load_data(f"{name}:{tmp_path}", val_fraction=0.0)
    assert (len(data.split("train")), len(data.split("test"))) == (n_train, n_test)
    assert data.input.size == 224 and not data.source.tensor_images
    if class_names:
        assert data.source.class_names == class_names
    image, label = data.split("test").dataset[0]
    assert image.shape == (3, 224, 224) and 0 <= label < data.num_classes


def test_known_labels_of_natural_datasets(tmp_path: Path) -> None:
    make_flowers102(tmp_path / "f")
    flowers = load_data(f"flowers102:{tmp_path / 'f'}")
    assert flowers.source.labels["train"].tolist() == [0, 1, 101]
    assert flowers.split("val").index.tolist() == [0]  # the official val split, not carved
    make_stanford_cars(tmp_path / "c")
    cars = load_data(f"stanford-cars:{tmp_path / 'c'}")
    assert cars.source.labels["test"].tolist() == [1, 0]
    make_sun397(tmp_path / "s")
    assert load_data(f"sun397:{tmp_path / 's'}").source.labels["train"].tolist() == [0, 1]


def test_imagefolder(tmp_path: Path) -> None:
    for split, cls, n in [
        ("train", "cat", 2),
        ("train", "dog", 3),
        ("val", "dog", 1),
        ("val", "cat", 1),
    ]:
        for i in range(n):
            write_jpg(tmp_path / split / cls / f"{i}.png", value=10 * i)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    data = load_data(f"imagefolder:{tmp_path}", val_fraction=0.0)
    assert data.source.class_names == ["cat", "dog"] and data.class_names == ["cat", "dog"]
    assert data.source.labels["train"].tolist() == [0, 0, 1, 1, 1]
    assert data.source.labels["test"].tolist() == [0, 1]
    assert data.label == f"imagefolder:{tmp_path}"
    write_jpg(tmp_path / "val" / "eel" / "0.png")
    with pytest.raises(InputError, match="eel: class folder not in"):
        load_data(f"imagefolder:{tmp_path}")


def test_imagefolder_needs_train(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=f"no train/ folder in {tmp_path}"):
        load_data(f"imagefolder:{tmp_path}")


def test_unreadable_image_is_an_input_error(tmp_path: Path) -> None:
    for split in ("train", "test"):
        (tmp_path / split / "a").mkdir(parents=True)
        (tmp_path / split / "a" / "x.jpg").write_text("not a jpeg")
    data = load_data(f"imagefolder:{tmp_path}", val_fraction=0.0)
    with pytest.raises(InputError, match=r"x\.jpg: cannot read image"):
        data.split("test").dataset[0]


@pytest.mark.parametrize("name", sorted(set(DATASETS.names()) - IN_MEMORY))
def test_missing_dataset_names_the_folder_searched(tmp_path: Path, name: str) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(InputError) as err:
        load_data(f"{name}:{root}")
    assert err.value.exit_code == 3 and str(root) in str(err.value)


def test_download_only_with_the_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.utils

    calls: list[tuple[str, str]] = []

    def fake_download(url: str, root: str, md5: str | None = None) -> None:
        calls.append((url, root))
        raise RuntimeError("offline")

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", fake_download)
    with pytest.raises(InputError, match=r"no data_batch_1\.bin"):
        load_data(f"cifar10:{tmp_path}")
    assert calls == []
    with pytest.raises(InputError, match="cifar10: download failed: offline"):
        load_data(f"cifar10:{tmp_path}", download=True)
    assert calls == [("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", str(tmp_path))]
    with pytest.raises(InputError, match="stanford-cars: download failed"):  # torchvision refuses
        load_data(f"stanford-cars:{tmp_path}", download=True)
