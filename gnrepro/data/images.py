"""The paper's data set and its proxies on disk, read with torchvision's data sets and transforms.

* ``imagenet``: ILSVRC-2012 in the ImageFolder layout (``train/<wnid>/*.JPEG``, ``val/<wnid>/*.JPEG``).
  Transforms of the paper (Sec. 4.1; docs/PROTOCOL.md): training uses scale and aspect-ratio
  augmentation (RandomResizedCrop 224) and a horizontal flip; evaluation resizes the shorter side
  to 256 and takes the single center 224x224 crop. Normalized with ImageNet's mean/std.
* ``pets``: Oxford-IIIT Pets in torchvision's layout (``oxford-iiit-pet/images/*.jpg``,
  ``oxford-iiit-pet/annotations/{trainval,test}.txt``), 37 breeds, the official trainval/test split,
  the ImageNet transforms at a configurable size.
* ``imagenette``: fast.ai's 10-class ImageNet subset in torchvision's layout
  (``imagenette2[-320|-160]/{train,val}/<wnid>/*.JPEG``), the ImageNet transforms.
* ``cifar10`` / ``cifar100``: torchvision's python pickles (``cifar-10-batches-py/``,
  ``cifar-100-python/``); 32x32 images, so the standard CIFAR augmentation (pad 4 + random 32 crop
  + flip) and the low-resolution stem (``small_input: true``).

Each builder checks the root first and raises a one-line ``DataError`` (what was expected where,
how to get it) before torchvision's own, often multi-line or download-suggesting, exceptions.
``data.download=true`` uses torchvision's downloaders where they exist (not for ImageNet).
"""
from __future__ import annotations

import os
import pickle
import re
from functools import partial
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torchvision import datasets
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.datasets.utils import download_and_extract_archive
from torchvision.transforms import v2

from PIL import Image

from gnrepro.data.base import UNREADABLE, BadImageError, DataError, DataSplits, ImageFiles, new_counter
from gnrepro.data.device_feed import loader_name
from gnrepro.data.gpu_decode import EncodedImages
from gnrepro.data.pickles import RefusedPickle, load_data_pickle

# ---------------------------------------------------------------------------------------- transforms

def _to_tensor(mean, std, loader: str = "pil") -> list:
    if loader == "pil_uint8":  # stays uint8; gnrepro.data.device_feed normalizes on the device
        return [v2.ToImage()]
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def imagenet_transforms(cfg):
    """The paper's train and eval transforms (Sec. 4.1) at the sizes in ``cfg``; with
    ``data.loader=pil_uint8`` they end in a uint8 tensor (normalized later, on the device)."""
    loader = loader_name(cfg)
    train = v2.Compose([
        v2.RandomResizedCrop(cfg.train_crop, antialias=True),  # scale (8%-100%) and aspect (3/4-4/3) augmentation
        v2.RandomHorizontalFlip(),
        *_to_tensor(cfg.mean, cfg.std, loader),
    ])
    val = v2.Compose([
        v2.Resize(cfg.eval_resize, antialias=True),  # an int resizes the shorter side, keeping the aspect ratio
        v2.CenterCrop(cfg.eval_crop),
        *_to_tensor(cfg.mean, cfg.std, loader),
    ])
    return train, val


def cifar_transforms(cfg):
    """Pad-and-crop plus flip for training (the usual CIFAR augmentation); nothing but
    normalization for evaluation, since the images are already at the model's resolution."""
    train = v2.Compose([
        v2.RandomCrop(cfg.train_crop, padding=cfg.crop_padding),
        v2.RandomHorizontalFlip(),
        *_to_tensor(cfg.mean, cfg.std),
    ])
    val = v2.Compose(_to_tensor(cfg.mean, cfg.std))
    return train, val


# ------------------------------------------------------------------------------------------ checks

def _root_value(cfg):
    """``data.root`` as given, or None when unset (``???`` in the config)."""
    if OmegaConf.is_config(cfg) and OmegaConf.is_missing(cfg, "root"):
        return None
    root = cfg.get("root")
    return None if root in (None, "", "???") else root


def _root(cfg, expected: str, how: str) -> Path:
    root = _root_value(cfg)
    if root is None:
        raise DataError(f"data={cfg.name} needs data.root=DIR: {expected}; {how}")
    root = Path(str(root)).expanduser()
    if not root.is_dir():
        raise DataError(f"data.root={root} does not exist; data={cfg.name} expects {expected} there; {how}")
    return root


def _image_folder(folder: Path, cfg, split: str, transform, how: str, **kwargs):
    """torchvision's ImageFolder on ``folder`` with its errors turned into one line."""
    if not folder.is_dir():
        raise DataError(f"{folder} does not exist; data={cfg.name} expects {split}/<class>/<images> "
                        f"under data.root; {how}")
    subdirs = [p for p in folder.iterdir() if p.is_dir()]
    if not subdirs:
        flat = [p for p in folder.iterdir() if p.suffix.lower() in IMG_EXTENSIONS]
        if flat and cfg.name == "imagenet" and split == "val":
            raise DataError(
                f"{folder} holds {len(flat)} images but no class folders: the flat layout of the original "
                f"ILSVRC2012_img_val.tar; sort it into val/<wnid>/ with "
                f"python scripts/sort_imagenet_val.py {folder} --devkit DIR/ILSVRC2012_devkit_t12"
            )
        raise DataError(f"{folder} has no class folders; data={cfg.name} expects {split}/<class>/<images>; {how}")
    if cfg.name == "imagenet" and split == "val":
        loose = sum(1 for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)
        if loose:  # a sort that stopped half-way: those images would silently drop out of the evaluation
            raise DataError(f"{folder} holds {loose} images beside its class folders (a half-done sort); finish it with "
                            f"python scripts/sort_imagenet_val.py {folder} --devkit DIR/ILSVRC2012_devkit_t12")
    try:
        return _OnceImageFolder(str(folder), transform=transform, **kwargs)
    except FileNotFoundError as err:  # "Found no valid file for the classes ..." (empty class folders)
        raise DataError(f"{folder}: {str(err).splitlines()[0]}; every class folder needs at least one image") from None


def images_once(directory, class_to_idx: dict, extensions=IMG_EXTENSIONS, is_valid_file=None,
                allow_empty: bool = False) -> list[tuple[str, int]]:
    """torchvision's ``make_dataset`` (same files, same order: walks sorted by folder path), except that
    a folder or image reached twice through symlinks is refused in one line (issue 24, item 3):
    following a symlink loop would repeat the class's images until the path grew too long, and an
    image linked into two classes would train with both labels."""
    valid = is_valid_file or (lambda path: path.lower().endswith(tuple(extensions)))
    folders: dict[str, str] = {}
    files: dict[str, str] = {}
    instances = []
    for target_class in sorted(class_to_idx):
        target_dir = os.path.join(directory, target_class)
        if not os.path.isdir(target_dir):
            continue
        walked = []
        for root, dirs, fnames in os.walk(target_dir, followlinks=True):
            real = os.path.realpath(root)
            if real in folders:
                raise DataError(f"{root} is {folders[real]} again (a symlink loop or a folder linked twice), so its "
                                f"images would count more than once; remove the link")
            folders[real] = root
            linked = [d for d in dirs if os.path.realpath(os.path.join(root, d)) in folders]
            if linked:
                raise DataError(f"{os.path.join(root, linked[0])} leads to "
                                f"{folders[os.path.realpath(os.path.join(root, linked[0]))]}, which the data set "
                                f"already holds (a symlink loop or a folder linked twice), so its images would count "
                                f"more than once; remove the link")
            walked.append((root, fnames))
        for root, fnames in sorted(walked):
            for fname in sorted(fnames):
                path = os.path.join(root, fname)
                if not valid(path):
                    continue
                real = os.path.realpath(path)
                if real in files:
                    raise DataError(f"{path} and {files[real]} are the same image (linked twice); an image counts "
                                    f"once, in one class: remove one of them")
                files[real] = path
                instances.append((path, class_to_idx[target_class]))
    found = {i for _, i in instances}
    empty = sorted(c for c, i in class_to_idx.items() if i not in found)
    if empty and not allow_empty:
        raise FileNotFoundError(f"Found no valid file for the classes {', '.join(empty)}. ")
    return instances


class _OnceImageFolder(datasets.ImageFolder):
    """ImageFolder whose listing is ``images_once``'s."""

    @staticmethod
    def make_dataset(directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        return images_once(directory, class_to_idx, extensions or IMG_EXTENSIONS, is_valid_file, allow_empty)


# Enough to tell whether a file can be an image at all: every format Pillow's decoders read names
# itself in its first bytes. Read for data sets up to CHECK_HEADERS images; above that (ImageNet),
# only empty files are found up front, and a broken image ends the run at the first batch that
# reads it (the run folder is then removed: gnrepro.train).
CHECK_HEADERS = 50_000


def check_image_files(paths: list, cfg) -> None:
    """One line for the first image file that is missing, empty or (small data sets) not an image,
    before anything trains (issue 24, item 3). ``data.skip_bad=true`` skips them at load time instead."""
    if cfg.get("skip_bad", False):
        return
    headers = len(paths) <= CHECK_HEADERS
    for path in paths:
        try:
            size = os.stat(path).st_size
            if size == 0:
                raise BadImageError(f"image {path} is empty (0 bytes); delete or replace it, or set data.skip_bad=true "
                                f"to skip unreadable images")
            if headers:
                with Image.open(path) as image:  # parses the header only
                    image.size  # noqa: B018
        except UNREADABLE as err:
            reason = err.strerror if isinstance(err, OSError) and err.strerror else (
                str(err).splitlines()[0] if str(err) else type(err).__name__)
            raise BadImageError(f"cannot read image {path} ({reason}); delete or replace it, or set data.skip_bad=true "
                            f"to skip unreadable images") from None


def _wrap(dataset, path_of, cfg, counter):
    return ImageFiles(dataset, partial(path_of, dataset), bool(cfg.get("skip_bad", False)), counter)


def _image_splits(train, val, path_of, cfg, classes: list[str]) -> DataSplits:
    """RGB image splits whose unreadable files are reported (or skipped and counted together).
    With ``data.loader=gpu`` the same files and labels, read as bytes for decoding on the GPU."""
    for ds in (train, val):
        check_image_files([path_of(ds, i) for i in range(len(ds))], cfg)
    counter = new_counter()
    if loader_name(cfg) == "gpu":
        train, val = _encoded(train, path_of, True), _encoded(val, path_of, False)
        path_of = _encoded_path
    return DataSplits(
        train=_wrap(train, path_of, cfg, counter), val=_wrap(val, path_of, cfg, counter),
        num_classes=len(classes), in_channels=3, classes=classes, skipped=counter,
    )


# The file behind sample i, per torchvision class (module-level so that they pickle).
def _folder_path(ds, i):
    return ds.samples[i][0]


def _imagenette_path(ds, i):
    return ds._samples[i][0]


def _pets_path(ds, i):
    return ds._images[i]


def _encoded_path(ds, i):
    return ds.paths[i]


def _labels(ds) -> list[int]:
    """Every sample's label, read from the index torchvision built (no image is opened)."""
    if isinstance(ds, datasets.OxfordIIITPet):
        return list(ds._labels)
    if isinstance(ds, datasets.Imagenette):
        return [label for _, label in ds._samples]
    return list(ds.targets)  # ImageFolder


def _encoded(ds, path_of, train: bool) -> EncodedImages:
    return EncodedImages([path_of(ds, i) for i in range(len(ds))], _labels(ds), train)


def _download(cfg, make, manual: str) -> None:
    """Run torchvision's downloader; a network or checksum failure becomes one line."""
    try:
        make()
    except Exception as err:  # URLError, checksum RuntimeError, disk full ...: all end the same way
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"data={cfg.name} data.download=true failed ({type(err).__name__}: {reason}); "
                        f"check the connection, or {manual}") from None


def _fetched_root(cfg, expected: str, how: str, manual: str, fetch) -> Path:
    """The checked ``data.root``; with ``data.download=true`` created first and filled by ``fetch(root)``
    (a torchvision downloader)."""
    if cfg.get("download") and _root_value(cfg) is not None:
        Path(str(cfg.root)).expanduser().mkdir(parents=True, exist_ok=True)
    root = _root(cfg, expected, how)
    if cfg.get("download"):
        _download(cfg, lambda: fetch(root), manual)
    return root


def _no_download(cfg, what: str):
    if cfg.get("download"):
        raise DataError(f"data={cfg.name} cannot be downloaded automatically: {what}")


# ------------------------------------------------------------------------------------------ builders

IMAGENET_HOW = ("get ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz "
                "from https://image-net.org/download, extract train/ per class, "
                "and sort val/ with scripts/sort_imagenet_val.py (see docs/data.md)")


def build_imagenet(cfg) -> DataSplits:
    expected = "train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (ImageFolder layout)"
    if cfg.get("download") and (_root_value(cfg) is None or not Path(str(cfg.root)).expanduser().is_dir()):
        _no_download(cfg, f"ImageNet needs a login; {IMAGENET_HOW}")
    root = _root(cfg, expected, IMAGENET_HOW)
    train_tf, val_tf = imagenet_transforms(cfg)
    train = _image_folder(root / "train", cfg, "train", train_tf, IMAGENET_HOW)
    val = _image_folder(root / "val", cfg, "val", val_tf, IMAGENET_HOW)
    if val.classes != train.classes:
        missing = sorted(set(train.classes) ^ set(val.classes))
        raise DataError(f"{root}: train/ has {len(train.classes)} class folders and val/ has {len(val.classes)}; "
                        f"they must be the same (differing: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''})")
    return _image_splits(train, val, _folder_path, cfg, list(train.classes))


IMAGENETTE_SIZES = {"full": "imagenette2", "320px": "imagenette2-320", "160px": "imagenette2-160"}


def build_imagenette(cfg) -> DataSplits:
    if cfg.size not in IMAGENETTE_SIZES:
        raise DataError(f"data.size must be one of {', '.join(IMAGENETTE_SIZES)}, got {cfg.size!r}")
    folder = IMAGENETTE_SIZES[cfg.size]
    expected = f"{folder}/train/<wnid>/*.JPEG and {folder}/val/<wnid>/*.JPEG"
    manual = f"extract https://s3.amazonaws.com/fast-ai-imageclas/{folder}.tgz into data.root"
    how = f"add data.download=true to fetch it with torchvision, or {manual}"
    root = _fetched_root(cfg, expected, how, manual,
                         lambda r: datasets.Imagenette(str(r), split="train", size=cfg.size, download=True))
    base = root / folder
    if not base.is_dir():
        raise DataError(f"{base} does not exist; data=imagenette data.size={cfg.size} expects {expected} "
                        f"under data.root={root}; {how}")
    train_tf, val_tf = imagenet_transforms(cfg)
    splits = {}
    for split, tf in (("train", train_tf), ("val", val_tf)):
        _image_folder(base / split, cfg, split, None, how)  # layout and empty-folder checks, one line each
        try:
            splits[split] = datasets.Imagenette(str(root), split=split, size=cfg.size, transform=tf)
        except KeyError as err:  # a class folder that is not one of Imagenette's 10 wnids
            raise DataError(f"{base / split} has class folder {err.args[0]!r}, not one of Imagenette's 10 wnids; "
                            f"re-extract {folder}.tgz") from None
    train, val = splits["train"], splits["val"]
    if val.wnids != train.wnids:
        raise DataError(f"{base}: train/ and val/ have different class folders; re-extract {folder}.tgz")
    return _image_splits(train, val, _imagenette_path, cfg, list(train.wnids))


PETS_MANUAL = ("extract images.tar.gz and annotations.tar.gz from https://www.robots.ox.ac.uk/~vgg/data/pets/ "
               "into DIR/oxford-iiit-pet/")
PETS_HOW = f"add data.download=true to fetch it with torchvision, or {PETS_MANUAL}"


def build_pets(cfg) -> DataSplits:
    expected = "oxford-iiit-pet/images/*.jpg and oxford-iiit-pet/annotations/{trainval,test}.txt"
    if cfg.get("download") and _root_value(cfg) is not None:
        Path(str(cfg.root)).expanduser().mkdir(parents=True, exist_ok=True)
    root = _root(cfg, expected, PETS_HOW)
    if root.name == "oxford-iiit-pet" and (root / "images").is_dir():
        root = root.parent  # pointed at the data set folder itself; torchvision wants its parent
    if cfg.get("download"):
        _download(cfg, lambda: datasets.OxfordIIITPet(str(root), split="trainval", download=True), PETS_MANUAL)
    base = root / "oxford-iiit-pet"
    for need in (base / "images", base / "annotations" / "trainval.txt", base / "annotations" / "test.txt"):
        if not need.exists():
            raise DataError(f"{need} does not exist; data=pets expects {expected} under data.root={root}; {PETS_HOW}")
    breeds = {}
    for index in ("trainval.txt", "test.txt"):
        _check_pets_annotations(base / "annotations" / index, breeds)
        if index == "trainval.txt" and sorted(breeds.values()) != list(range(1, len(breeds) + 1)):
            raise DataError(f"{base / 'annotations' / index} numbers its {len(breeds)} breeds "
                            f"{sorted(breeds.values())[:8]}..., not 1..{len(breeds)}; re-extract annotations.tar.gz")
    train_tf, val_tf = imagenet_transforms(cfg)
    train = datasets.OxfordIIITPet(str(root), split="trainval", transform=train_tf)
    val = datasets.OxfordIIITPet(str(root), split="test", transform=val_tf)
    for ds, index in ((train, "trainval.txt"), (val, "test.txt")):
        missing = [p for p in ds._images if not p.is_file()]
        if missing:
            raise DataError(f"{base / 'annotations' / index} lists {len(missing)} images missing from {base / 'images'}, "
                            f"e.g. {missing[0].name}; re-extract images.tar.gz")
    if len(train.classes) < 2:
        raise DataError(f"{base / 'annotations' / 'trainval.txt'} names {len(train.classes)} breed(s); a classifier "
                        f"needs at least 2; re-extract annotations.tar.gz")
    if max(val._labels, default=0) >= len(train.classes):
        raise DataError(f"{base / 'annotations' / 'test.txt'} has breeds that trainval.txt lacks; "
                        f"re-extract annotations.tar.gz")
    return _image_splits(train, val, _pets_path, cfg, list(train.classes))


PETS_LINE = re.compile(r"([A-Za-z][A-Za-z_]*)_(\d+) (\d+) ([12]) (\d+)")  # Abyssinian_100 1 1 1


def _check_pets_annotations(path: Path, breeds: dict) -> None:
    """Parse a Pets split file strictly, as torchvision reads it (``<image> <class id> <species> <breed
    id>`` per line, class ids from 1), one line naming the first line that is not one (issue 24,
    item 3); ``breeds`` (breed name -> class id) must agree across the lines of both files."""
    fix = "re-extract annotations.tar.gz"
    try:
        text = path.read_bytes().decode()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {path} ({getattr(err, 'strerror', None) or type(err).__name__}); {fix}") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    if not lines:
        raise DataError(f"{path} lists no images; {fix}")
    for number, line in enumerate(lines, 1):
        match = PETS_LINE.fullmatch(" ".join(line.split()))
        if not match:
            raise DataError(f"{path} line {number} is not '<image> <class id> <species 1|2> <breed id>': "
                            f"{line[:60]!r}; {fix}")
        breed, class_id = match.group(1), int(match.group(3))
        if breeds.setdefault(breed, class_id) != class_id:
            raise DataError(f"{path} line {number}: breed {breed} has class id {class_id}, elsewhere "
                            f"{breeds[breed]}; {fix}")


class _SafeCIFAR:
    """torchvision's CIFAR data set, its pickles read by ``load_data_pickle`` (nothing in them runs,
    no forged length allocates) and checked up front (issue 24, item 3): uint8 rows of 3x32x32, one
    integer label each, every label in range of the meta file's class names, at least two classes.
    Sample access is torchvision's own."""

    def __init__(self, real, root: Path, train: bool, transform):
        self.real = real
        base = root / real.base_folder
        archive = Path(real.url).name
        meta_path = base / real.meta["filename"]
        meta = _load(meta_path, archive)
        classes = meta.get(real.meta["key"]) if isinstance(meta, dict) else None
        if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
            raise DataError(f"cannot load {meta_path} (no {real.meta['key']!r} list of class names); "
                            f"the pickles are damaged, re-extract {archive}")
        if len(classes) < 2:
            raise DataError(f"{meta_path} names {len(classes)} class(es); a classifier needs at least 2; "
                            f"the pickles are damaged, re-extract {archive}")
        data, targets = [], []
        for name, _ in real.train_list if train else real.test_list:
            entry, labels = _batch(base / name, archive)
            bad = next((x for x in labels if not (0 <= x < len(classes))), None)
            if bad is not None:
                raise DataError(f"{base / name} has label {bad}, outside the {len(classes)} classes of "
                                f"{meta_path.name}; the pickles are damaged, re-extract {archive}")
            data.append(entry["data"])
            targets.extend(labels)
        self.dataset = real.__new__(real)  # torchvision's __getitem__ on our arrays, without its unpickling
        datasets.VisionDataset.__init__(self.dataset, str(root), transform=transform)
        self.dataset.train = train
        self.dataset.data = np.vstack(data).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))
        self.dataset.targets = targets
        self.dataset.classes = classes
        self.dataset.class_to_idx = {c: i for i, c in enumerate(classes)}


def _load(path: Path, archive: str):
    """One CIFAR pickle, or one line naming it: refused (it asks for code) or damaged."""
    try:
        return load_data_pickle(path)
    except RefusedPickle as err:
        raise DataError(f"refused to load {path}: {err}; it is not a CIFAR file, replace it with a fresh "
                        f"copy of {archive}") from None
    except (pickle.UnpicklingError, OSError) as err:
        reason = err.strerror if isinstance(err, OSError) else str(err)
        raise DataError(f"cannot load {path} ({reason}); the pickles are damaged, re-extract {archive}") from None


def _batch(path: Path, archive: str) -> tuple[dict, list[int]]:
    entry = _load(path, archive)
    labels = entry.get("labels", entry.get("fine_labels")) if isinstance(entry, dict) else None
    data = entry.get("data") if isinstance(entry, dict) else None
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3 * 32 * 32
            and isinstance(labels, list) and len(labels) == len(data)
            and all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in labels)):
        raise DataError(f"cannot load {path} (not a CIFAR batch: data must be uint8 rows of 3072 with one integer "
                        f"label each); the pickles are damaged, re-extract {archive}")
    return entry, [int(x) for x in labels]


def build_cifar(cfg) -> DataSplits:
    real = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[cfg.name]
    files = [name for name, _ in real.train_list + real.test_list] + [real.meta["filename"]]
    expected = f"{real.base_folder}/ with {', '.join(files)} (the python version)"
    manual = f"extract {real.url} into data.root"
    how = f"add data.download=true to fetch it with torchvision, or {manual}"
    # torchvision downloads, checks the archive's MD5 and extracts both splits (nothing is unpickled)
    root = _fetched_root(cfg, expected, how, manual, lambda r: download_and_extract_archive(
        real.url, str(r), filename=real.filename, md5=real.tgz_md5))
    base = root / real.base_folder
    missing = [name for name in files if not os.path.lexists(base / name)]  # a directory in its place: damaged
    if missing:
        raise DataError(f"{base / missing[0]} does not exist; data={cfg.name} expects {expected} under "
                        f"data.root={root}; {how}")
    train_tf, val_tf = cifar_transforms(cfg)
    splits = {}
    for train in (True, False):
        splits[train] = _SafeCIFAR(real, root, train, train_tf if train else val_tf).dataset
    train, val = splits[True], splits[False]
    return DataSplits(train=train, val=val, num_classes=len(train.classes), in_channels=3, classes=list(train.classes))


BUILDERS = {
    "imagenet": build_imagenet,
    "pets": build_pets,
    "imagenette": build_imagenette,
    "cifar10": build_cifar,
    "cifar100": build_cifar,
}
