"""Tiny fake copies of the on-disk data sets, in exactly the layouts the loaders (and torchvision)
read: real JPEG/PNG files written with Pillow, the index files and the pickles. Used by the tests
and by ``scripts/bench_input_pipeline.py``; random pixels, so nothing here is learnable.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

IMAGENETTE_WNIDS = ["n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
                    "n03394916", "n03417042", "n03425413", "n03445777", "n03888257"]


def _image(path: Path, size: tuple[int, int], rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)  # format from the suffix: .JPEG/.jpg -> JPEG, .png -> PNG


def _sizes(rng, base: tuple[int, int]):
    # vary width/height a little so resize + crop see non-square images of different shapes
    w, h = base
    return int(w * rng.uniform(0.8, 1.25)), int(h * rng.uniform(0.8, 1.25))


def make_imagenet(root, classes: int = 3, train_per_class: int = 4, val_per_class: int = 2,
                  size: tuple[int, int] = (64, 48), seed: int = 0, flat_val: bool = False) -> Path:
    """``root/train/<wnid>/<wnid>_<i>.JPEG`` and ``root/val/<wnid>/ILSVRC2012_val_<n>.JPEG``
    (or, with ``flat_val``, all val images directly in ``root/val/`` as in the original archive)."""
    root, rng = Path(root), np.random.default_rng(seed)
    wnids = [f"n{1440764 + 1000 * k:08d}" for k in range(classes)]
    n = 0
    for wnid in wnids:
        for i in range(train_per_class):
            _image(root / "train" / wnid / f"{wnid}_{i}.JPEG", _sizes(rng, size), rng)
        for _ in range(val_per_class):
            n += 1
            name = f"ILSVRC2012_val_{n:08d}.JPEG"
            _image(root / "val" / ("" if flat_val else wnid) / name, _sizes(rng, size), rng)
    return root


def make_imagenette(root, size_name: str = "320px", train_per_class: int = 2, val_per_class: int = 1,
                    classes: int = 10, size: tuple[int, int] = (64, 48), seed: int = 0) -> Path:
    """``root/imagenette2-320/{train,val}/<wnid>/*.JPEG`` with (some of) Imagenette's 10 wnids."""
    folder = {"full": "imagenette2", "320px": "imagenette2-320", "160px": "imagenette2-160"}[size_name]
    root, rng = Path(root), np.random.default_rng(seed)
    for wnid in IMAGENETTE_WNIDS[:classes]:
        for split, count in (("train", train_per_class), ("val", val_per_class)):
            for i in range(count):
                _image(root / folder / split / wnid / f"{wnid}_{split}{i}.JPEG", _sizes(rng, size), rng)
    return root


PET_BREEDS = [("Abyssinian", 1), ("american_bulldog", 2), ("Bengal", 1)]  # (breed, species: 1 cat, 2 dog)


def make_pets(root, train_per_breed: int = 3, test_per_breed: int = 2, size: tuple[int, int] = (64, 48),
              seed: int = 0) -> Path:
    """``root/oxford-iiit-pet/images/<Breed>_<i>.jpg`` and ``annotations/{trainval,test}.txt``
    with the official line format ``<image id> <class id 1..37> <species 1|2> <breed id>``."""
    root, rng = Path(root), np.random.default_rng(seed)
    base = root / "oxford-iiit-pet"
    (base / "annotations").mkdir(parents=True, exist_ok=True)
    lines = {"trainval": [], "test": []}
    for label, (breed, species) in enumerate(PET_BREEDS, start=1):
        for i in range(train_per_breed + test_per_breed):
            image_id = f"{breed}_{i + 1}"
            _image(base / "images" / f"{image_id}.jpg", _sizes(rng, size), rng)
            split = "trainval" if i < train_per_breed else "test"
            lines[split].append(f"{image_id} {label} {species} {label}")
    for split, rows in lines.items():
        (base / "annotations" / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return root


def make_cifar(root, name: str = "cifar10", train_per_batch: int = 4, test: int = 6, seed: int = 0) -> Path:
    """torchvision's python pickles: ``cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta``
    or ``cifar-100-python/train, test, meta``; images are uint8 rows of 3*32*32 (channel-major)."""
    root, rng = Path(root), np.random.default_rng(seed)
    if name == "cifar10":
        base, classes = root / "cifar-10-batches-py", 10
        train_files, test_files, meta_file = [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta"
        label_key, meta = "labels", {"label_names": [f"class{i}" for i in range(classes)]}
    else:
        base, classes = root / "cifar-100-python", 100
        train_files, test_files, meta_file = ["train"], ["test"], "meta"
        label_key, meta = "fine_labels", {"fine_label_names": [f"class{i}" for i in range(classes)]}
    base.mkdir(parents=True, exist_ok=True)

    def dump(file, count):
        entry = {"data": rng.integers(0, 256, (count, 3 * 32 * 32), dtype=np.uint8),
                 label_key: [int(x) for x in rng.integers(0, classes, count)]}
        with open(base / file, "wb") as f:
            pickle.dump(entry, f)

    for file in train_files:
        dump(file, train_per_batch)
    for file in test_files:
        dump(file, test)
    with open(base / meta_file, "wb") as f:
        pickle.dump(meta, f)
    return root
