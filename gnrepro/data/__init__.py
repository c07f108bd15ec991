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


def build_loaders(splits: DataSplits, cfg, images_per_step: int, eval_batch: int, seed: int):
    """Train loader with exactly ``images_per_step`` images per step (the last partial step is
    dropped, so every step splits evenly over the workers) and a sequential val loader.

    ``cfg.subset`` keeps a fixed random subset of the train split (the same for every seed).
    """
    if cfg.get("subset") is not None:
        keep = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(0))[: cfg.subset]
        splits.train = Subset(splits.train, keep.tolist())
    if len(splits.train) < images_per_step:
        raise ConfigError(
            f"one step needs batch*workers = {images_per_step} images but the train split has only "
            f"{len(splits.train)}; lower batch or workers"
        )
    common = dict(num_workers=cfg.num_workers, pin_memory=torch.cuda.is_available())
    if cfg.num_workers > 0:
        common["persistent_workers"] = True
    train = DataLoader(
        splits.train, batch_size=images_per_step, shuffle=True, drop_last=True,
        generator=torch.Generator().manual_seed(seed), **common,
    )
    val = DataLoader(splits.val, batch_size=eval_batch, shuffle=False, **common)
    return train, val
