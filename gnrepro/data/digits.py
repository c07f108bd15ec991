"""The embedded default data set: scikit-learn's bundled handwritten digits (no download).

1,797 grayscale 8x8 images of 10 classes, split once into a fixed stratified train/val hold-out,
upsampled to ``image_size`` so that every ResNet stage still has spatial extent (IN needs more
than one pixel per channel). No augmentation: at this short schedule, random
shifts slowed convergence more than they helped. A small proxy for checking the pipeline, not the paper's ImageNet.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import TensorDataset

from gnrepro.data import DataSplits

NUM_CLASSES = 10


def build(cfg) -> DataSplits:
    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.long)
    train_idx, val_idx = train_test_split(
        torch.arange(len(labels)).numpy(), test_size=cfg.val_fraction,
        stratify=labels.numpy(), random_state=cfg.split_seed,
    )
    images = F.interpolate(images, size=cfg.image_size, mode="bilinear", align_corners=False)
    # Standardize with the train split's statistics only.
    mean, std = images[train_idx].mean(), images[train_idx].std()
    images = (images - mean) / std
    return DataSplits(
        train=TensorDataset(images[train_idx], labels[train_idx]),
        val=TensorDataset(images[val_idx], labels[val_idx]),
        num_classes=NUM_CLASSES,
        in_channels=1,
    )
