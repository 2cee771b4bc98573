"""Natural-image dataset sources (224 px, read lazily from their image files and their own
split lists): Food-101, Flowers-102, Oxford-IIIT Pets, Stanford Cars, DTD, SUN397, imagefolder."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossxfer.errors import InputError

if TYPE_CHECKING:
    pass

from lossxfer.datasets.base import (
    DATASETS,
    DataSpec,
    Source,
    data_root,
    fetch,
    file_source,
    find_folder,
    loadmat,
    read_lines,
)

# ---------------------------------------------------------------------------------------------
# Natural-image sets read from their split lists (224 px, docs/method.md §2 transforms).


def _download_tv(name: str, tv_class: str, root: Path, **kwargs: Any) -> None:
    import torchvision.datasets

    fetch(name, lambda: getattr(torchvision.datasets, tv_class)(str(root), download=True, **kwargs))


@DATASETS.register("food101")
def _food101(spec: DataSpec, download: bool) -> Source:
    """Food-101: ROOT/food-101/meta/{train,test}.json and images/<class>/<id>.jpg."""
    root = data_root(spec)
    if download:
        _download_tv("food101", "Food101", root)
    base = find_folder("food101", [root / "food-101", root], ["meta/train.json", "meta/test.json"])
    listing = {s: json.loads((base / "meta" / f"{s}.json").read_text()) for s in ("train", "test")}
    classes = sorted(listing["train"])
    splits = {}
    for split, by_class in listing.items():
        pairs = [
            (base / "images" / f"{rel}.jpg", classes.index(c))
            for c in by_class
            for rel in by_class[c]
        ]
        splits[split] = ([p for p, _ in pairs], [y for _, y in pairs])
    return file_source(base, splits, classes)


@DATASETS.register("flowers102")
def _flowers102(spec: DataSpec, download: bool) -> Source:
    """Oxford 102 Flowers: ROOT/flowers-102/{jpg/, imagelabels.mat, setid.mat}; official val."""
    import numpy as np

    root = data_root(spec)
    if download:
        _download_tv("flowers102", "Flowers102", root)
    base = find_folder("flowers102", [root / "flowers-102", root], ["imagelabels.mat", "setid.mat"])
    labels = np.atleast_1d(loadmat(base / "imagelabels.mat")["labels"])
    set_ids = loadmat(base / "setid.mat")
    splits = {}
    for split, key in (("train", "trnid"), ("val", "valid"), ("test", "tstid")):
        ids = [int(i) for i in np.atleast_1d(set_ids[key])]
        splits[split] = (
            [base / "jpg" / f"image_{i:05d}.jpg" for i in ids],
            [int(labels[i - 1]) - 1 for i in ids],
        )
    return file_source(base, splits, [str(i) for i in range(1, 103)])


@DATASETS.register("oxford-pets")
def _oxford_pets(spec: DataSpec, download: bool) -> Source:
    """Oxford-IIIT Pets: ROOT/oxford-iiit-pet/annotations/{trainval,test}.txt and images/."""
    root = data_root(spec)
    if download:
        _download_tv("oxford-pets", "OxfordIIITPet", root)
    needed = ["annotations/trainval.txt", "annotations/test.txt"]
    base = find_folder("oxford-pets", [root / "oxford-iiit-pet", root], needed)
    names: dict[int, str] = {}
    splits = {}
    for split, listing in (("train", "trainval"), ("test", "test")):
        rows = [line.split() for line in read_lines(base / "annotations" / f"{listing}.txt")]
        rows = [r for r in rows if not r[0].startswith("#")]
        for image, label, *_ in rows:
            names[int(label) - 1] = " ".join(w.title() for w in image.rsplit("_", 1)[0].split("_"))
        paths = [base / "images" / f"{r[0]}.jpg" for r in rows]
        splits[split] = (paths, [int(r[1]) - 1 for r in rows])
    return file_source(base, splits, [names.get(i, str(i)) for i in range(max(names) + 1)])


@DATASETS.register("stanford-cars")
def _stanford_cars(spec: DataSpec, download: bool) -> Source:
    """Stanford Cars: ROOT/stanford_cars/{devkit/cars_meta.mat, devkit/cars_train_annos.mat,
    cars_test_annos_withlabels.mat, cars_train/, cars_test/} (no longer downloadable)."""
    import numpy as np

    root = data_root(spec)
    if download:
        _download_tv("stanford-cars", "StanfordCars", root)
    needed = ["devkit/cars_meta.mat", "devkit/cars_train_annos.mat"]
    needed.append("cars_test_annos_withlabels.mat")
    base = find_folder("stanford-cars", [root / "stanford_cars", root], needed)
    meta = loadmat(base / "devkit" / "cars_meta.mat")
    classes = [str(c) for c in np.atleast_1d(meta["class_names"])]
    splits = {}
    for split, annos in (("train", "devkit/cars_train_annos.mat"), ("test", needed[2])):
        records = np.atleast_1d(loadmat(base / annos)["annotations"])
        splits[split] = (
            [base / f"cars_{split}" / str(r["fname"]) for r in records],
            [int(r["class"]) - 1 for r in records],
        )
    return file_source(base, splits, classes)


@DATASETS.register("dtd")
def _dtd(spec: DataSpec, download: bool) -> Source:
    """Describable Textures, partition 1: ROOT/dtd/dtd/{images/<class>/, labels/*1.txt}."""
    root = data_root(spec)
    if download:
        _download_tv("dtd", "DTD", root)
    needed = ["labels/train1.txt", "labels/val1.txt", "labels/test1.txt"]
    base = find_folder("dtd", [root / "dtd" / "dtd", root / "dtd", root], needed)
    listing = {s: read_lines(base / "labels" / f"{s}1.txt") for s in ("train", "val", "test")}
    classes = sorted({rel.split("/")[0] for rels in listing.values() for rel in rels})
    splits = {
        s: ([base / "images" / r for r in rels], [classes.index(r.split("/")[0]) for r in rels])
        for s, rels in listing.items()
    }
    return file_source(base, splits, classes)


_SUN397_PARTITIONS = "https://vision.princeton.edu/projects/2010/SUN/download/Partitions.zip"


@DATASETS.register("sun397")
def _sun397(spec: DataSpec, download: bool) -> Source:
    """SUN397, official partition 1: ROOT/SUN397/ClassName.txt, Training_01.txt,
    Testing_01.txt (from Partitions.zip, also looked for in ROOT and a Partitions/ folder)."""
    root = data_root(spec)
    if download:
        from torchvision.datasets.utils import download_and_extract_archive

        _download_tv("sun397", "SUN397", root)
        fetch("sun397", lambda: download_and_extract_archive(_SUN397_PARTITIONS, str(root)))
    base = find_folder("sun397", [root / "SUN397", root], ["ClassName.txt"])
    lists = ["Training_01.txt", "Testing_01.txt"]
    parts = find_folder("sun397", [base, base / "Partitions", root, root / "Partitions"], lists)
    classes = read_lines(base / "ClassName.txt")  # "/a/abbey"
    index = {c: i for i, c in enumerate(classes)}
    splits = {}
    for split, listing in zip(("train", "test"), lists, strict=True):
        rels = read_lines(parts / listing)  # "/a/abbey/sun_aaa.jpg"
        unknown = [r for r in rels if r.rsplit("/", 1)[0] not in index]
        if unknown:
            raise InputError(f"{parts / listing}: {unknown[0]} is not in a ClassName.txt class")
        splits[split] = (
            [base / r.lstrip("/") for r in rels],
            [index[r.rsplit("/", 1)[0]] for r in rels],
        )
    return file_source(base, splits, [c.split("/", 2)[-1] for c in classes])


# ---------------------------------------------------------------------------------------------
# imagefolder:PATH — ImageNet layout.

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}
)


def _scan(folder: Path, classes: Iterable[str]) -> tuple[list[Path], list[int]]:
    """Image files under folder/<class>/ (recursively, sorted), labelled by class position."""
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(class_dir):
            dirnames.sort()
            for f in sorted(filenames):
                if Path(f).suffix.lower() in IMAGE_SUFFIXES and not f.startswith("."):
                    paths.append(Path(dirpath) / f)
                    labels.append(label)
    return paths, labels


@DATASETS.register("imagefolder")
def _imagefolder(spec: DataSpec, download: bool) -> Source:
    """`imagefolder:PATH`: PATH/train/<class>/*.jpg and PATH/val/ (or test/) as the test split.

    Class ids are the sorted train folder names; rows are in sorted path order (stable ids).
    """
    root = data_root(spec)
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise InputError(f"imagefolder: no train/ folder in {root} (expected train/<class>/...)")
    eval_dir = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
    if eval_dir is None:
        raise InputError(f"imagefolder: no val/ or test/ folder in {root}")
    classes = sorted(
        d.name for d in train_dir.iterdir() if d.is_dir() and not d.name.startswith(".")
    )
    extra = sorted(
        d.name
        for d in eval_dir.iterdir()
        if d.is_dir() and d.name not in classes and not d.name.startswith(".")
    )
    if extra:
        raise InputError(f"{eval_dir / extra[0]}: class folder not in {train_dir}")
    splits = {"train": _scan(train_dir, classes), "test": _scan(eval_dir, classes)}
    return file_source(root, splits, classes)
