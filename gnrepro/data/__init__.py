"""Data sets, keyed by ``data.name``: each builder returns the train/val splits and what the model
needs to know about them (classes, input channels, whether to use the low-resolution stem)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from gnrepro.norms import ConfigError


@dataclass
class DataSplits:
    train: Dataset
    val: Dataset
    num_classes: int
    in_channels: int


def build_datasets(cfg) -> DataSplits:
    """Build the splits for the data config ``cfg`` (the ``data`` group)."""
    from gnrepro.data import digits

    builders = {"digits": digits.build}
    if cfg.name not in builders:
        raise ConfigError(f"unknown data set {cfg.name!r}; choose one of {', '.join(sorted(builders))}")
    return builders[cfg.name](cfg)


def build_loaders(splits: DataSplits, cfg, batch_sampler, eval_batch: int):
    """Train loader driven by ``batch_sampler`` (one list of indices per optimizer step, see
    gnrepro.sampling) and a sequential val loader."""
    common = dict(num_workers=cfg.num_workers, pin_memory=torch.cuda.is_available())
    if cfg.num_workers > 0:
        common["persistent_workers"] = True
    train = DataLoader(splits.train, batch_sampler=batch_sampler, **common)
    val = DataLoader(splits.val, batch_size=eval_batch, shuffle=False, **common)
    return train, val


def limit_train(splits: DataSplits, cfg, images_per_step: int) -> None:
    """Apply ``cfg.subset`` (a fixed random subset of the train split, the same for every seed) and
    check that one step's worth of images is there."""
    if cfg.get("subset") is not None:
        keep = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(0))[: cfg.subset]
        splits.train = Subset(splits.train, keep.tolist())
    if len(splits.train) < images_per_step:
        raise ConfigError(
            f"one step needs batch*workers = {images_per_step} images but the train split has only "
            f"{len(splits.train)}; lower batch or workers"
        )
