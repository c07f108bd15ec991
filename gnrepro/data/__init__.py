"""Data sets, keyed by ``data.name``: each builder returns the train/val splits and what the model
needs to know about them (classes, input channels), and ``build_loaders`` turns them into the
DataLoaders the trainer iterates.

The builders live in ``digits.py`` (the embedded default) and ``images.py`` (ImageNet, Oxford-IIIT
Pets, CIFAR-10/100, Imagenette on disk). Every loader checks its root before touching torchvision
so that a missing or malformed copy fails with one line (a ``DataError``) saying what was expected
where and how to get it (``gnrepro.data.base`` holds the splits type, the errors and the
image-file wrapper they share). An unreadable image found while training raises a ``BadImageError``
naming the file (or, with ``data.skip_bad=true``, is replaced by the next readable image and
counted), also as one line, even when it happens inside a DataLoader worker process.
"""
from __future__ import annotations

import math
from functools import partial

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from gnrepro.data.base import DataSplits
from gnrepro.data.device_feed import collate_fn, feed
from gnrepro.errors import ConfigError

# Training images per epoch of each data set's official split (published sizes; digits: see
# digits_split). The schema refuses a data.subset above them; plan.py costs a sweep with them.
TRAIN_IMAGES = {
    "imagenet": 1_281_167,  # ILSVRC-2012 train
    "pets": 3_680,          # Oxford-IIIT Pets, the official trainval split (annotations/trainval.txt)
    "imagenette": 9_469,    # Imagenette train
    "cifar10": 50_000,
    "cifar100": 50_000,
}
DIGITS_IMAGES = 1_797  # scikit-learn's bundled digits


def digits_split(val_fraction: float) -> tuple[int, int]:
    """(train, val) sizes of the digits hold-out, as scikit-learn's train_test_split rounds them."""
    n_val = math.ceil(val_fraction * DIGITS_IMAGES)
    n_train = math.floor((1.0 - val_fraction) * DIGITS_IMAGES)
    return n_train, n_val


def train_images(cfg) -> int | None:
    """The full train split's size for the data config ``cfg`` (before data.subset), if known."""
    if cfg["name"] == "digits":
        return digits_split(cfg["val_fraction"])[0]
    return TRAIN_IMAGES.get(cfg["name"])


def build_datasets(cfg, seed: int = 0) -> DataSplits:
    """Build the splits for the data config ``cfg`` (the ``data`` group); ``seed`` is the run's
    (it seeds the embedded set's per-image augmentation)."""
    # imported here: they load scikit-learn and torchvision, which plan and schema do not need
    from gnrepro.data import digits, images

    builders = {"digits": partial(digits.build, seed=seed), **images.BUILDERS}
    if cfg.name not in builders:
        raise ConfigError(f"unknown data set {cfg.name!r}; choose one of {', '.join(sorted(builders))}")
    return builders[cfg.name](cfg)


def set_epoch(dataset: Dataset, epoch: int) -> None:
    """Tell a data set whose augmentation is drawn per (seed, epoch, image) which epoch it serves,
    through any wrappers (Subset, ImageFiles); data sets without one are left alone."""
    while dataset is not None:
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
            return
        dataset = getattr(dataset, "dataset", None)


def loader_options(cfg) -> dict:
    """DataLoader settings from the data config, with defaults that keep a GPU fed.

    ``pin_memory: auto`` pins only when CUDA is present (pinning is wasted work on CPU);
    ``persistent_workers`` keeps worker processes (and their file handles) alive across epochs,
    which only applies when ``num_workers > 0``.
    """
    workers = cfg.get("num_workers", 0)  # types and ranges: checked by gnrepro.settings.schema
    pin = cfg.get("pin_memory", "auto")
    if pin == "auto":
        pin = torch.cuda.is_available()
    options = dict(num_workers=workers, pin_memory=pin)
    if collate_fn(cfg) is not None:  # data.loader=gpu: batches of encoded files
        options["collate_fn"] = collate_fn(cfg)
    if workers > 0:
        options["persistent_workers"] = bool(cfg.get("persistent_workers", True))
        prefetch = cfg.get("prefetch_factor")
        if prefetch is not None:
            options["prefetch_factor"] = prefetch
    return options


def build_loaders(splits: DataSplits, cfg, batch_sampler, eval_batch: int, device=None):
    """Train loader driven by ``batch_sampler`` (one list of indices per optimizer step, see
    gnrepro.data.sampling) and a sequential val loader; with ``data.loader`` other than ``pil`` they
    yield batches already normalized on ``device`` (gnrepro/data/device_feed.py)."""
    common = loader_options(cfg)
    # Each loader has its own generator for the base seed every new iterator draws (the loader workers'
    # seeds): drawn from the global RNG, it shifted that stream by one draw whenever a relaunch resumed
    # mid-epoch (one iterator more than the straight run), and with data.num_workers=0 the global RNG
    # is what draws the crops and flips, so a resumed run was not the straight run. Seeded from the
    # run's seed and the first worker this process hosts: each process's workers keep their own seeds.
    seed = getattr(batch_sampler, "seed", 0) * 1_000_003 + min(getattr(batch_sampler, "hosted", range(1)), default=0)
    train = DataLoader(splits.train, batch_sampler=batch_sampler, generator=torch.Generator().manual_seed(seed), **common)
    val = DataLoader(splits.val, batch_size=eval_batch, shuffle=False, generator=torch.Generator().manual_seed(seed + 1),
                     **common)
    return feed(train, cfg, device, train=True), feed(val, cfg, device, train=False)


def limit_train(splits: DataSplits, cfg, images_per_step: int) -> None:
    """Apply ``cfg.subset`` (a fixed random subset of the train split, the same for every seed) and
    check that one step's worth of images is there."""
    if cfg.get("subset") is not None:
        if cfg.subset > len(splits.train):
            raise ConfigError(f"data.subset={cfg.subset} is more than the {len(splits.train):,} train images of "
                              f"data={cfg.name} in this copy; set data.subset to at most {len(splits.train)} (or null)")
        keep = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(0))[: cfg.subset]
        splits.train = Subset(splits.train, keep.tolist())
    if len(splits.train) < images_per_step:
        raise ConfigError(
            f"one step needs batch*workers = {images_per_step} images but the train split has only "
            f"{len(splits.train)}; lower batch or workers"
        )
