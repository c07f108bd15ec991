"""The embedded default data set: scikit-learn's bundled handwritten digits (no download).

1,797 grayscale 8x8 images of 10 classes, split once into a fixed stratified train/val hold-out,
upsampled to ``image_size`` so that every ResNet stage still has spatial extent (IN needs more
than one pixel per channel). A small proxy for the paper's ImageNet, not the experiment itself.

Why training images are augmented (``data.augment``): 1,437 fixed images for a ResNet with the
paper's widths is a heavy over-fitting regime, where BN's batch noise acts as a regulariser and
wins at every batch size. ImageNet (Sec. 4.1) is data-rich: the paper's RandomResizedCrop shows the
network a new view of each image in every epoch. A random affine warp plus pixel noise, drawn anew
for every (seed, epoch, image), plays that role here (the pilots behind each magnitude and the
rest of the proxy protocol: configs/proxy/digits.yaml).

Why an exposure jitter (``contrast``, ``brightness``; off unless set): every digit is drawn with the
same ink on the same background, so two digits' feature statistics are nearly the population's and
BN's statistics over 2 images are barely noisier than over 32. Photos differ in exposure from image
to image. A per-image gain and offset of the ink (issue 10's pilots, docs/proxy.md) is the
knob that tests whether that heterogeneity is what the proxy was missing.
"""
from __future__ import annotations

import multiprocessing

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset, TensorDataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from gnrepro.data.base import DataSplits

NUM_CLASSES = 10
VAL_SEED = 1_000_000_007  # seeds the augmented val copies (data.augment_val): one fixed draw, not any run's seed


class AugmentedDigits(Dataset):
    """Train images with a random affine warp (torchvision ``transforms.v2.functional.affine``),
    optionally an exposure jitter (ink x gain + offset), and additive Gaussian noise, drawn from a
    generator seeded by (seed, epoch, index).

    The magnitudes are checked by the config schema (``gnrepro.settings.schema.AUGMENT``). The draw
    depends on nothing but those three numbers, so a run resumed mid-epoch, or images
    served by DataLoader worker processes in any order, see exactly the same augmentation. The
    epoch lives in a shared value so worker processes read the current one.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float, aug, seed: int):
        self.images, self.labels = images, labels  # images in [0, 1]: the warp fills with 0 = background
        self.mean, self.std = mean, std
        self.rotate, self.scale, self.shear = float(aug.rotate), float(aug.scale), float(aug.shear)
        self.translate, self.noise = float(aug.translate), float(aug.noise)
        self.contrast, self.brightness = float(aug.contrast), float(aug.brightness)
        self.seed = seed
        self._epoch = multiprocessing.get_context().Value("i", 1, lock=False)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.value = epoch

    def __len__(self) -> int:
        return len(self.labels)

    def generator(self, index: int) -> torch.Generator:
        key = (self.seed * 1_000_003 + self._epoch.value) * 10_000_019 + index
        return torch.Generator().manual_seed(key % (2**63 - 1))

    def __getitem__(self, index: int):
        g = self.generator(index)
        u = torch.rand(5, generator=g) * 2 - 1  # five uniform draws in [-1, 1]
        image = TF.affine(
            self.images[index],
            angle=float(u[0]) * self.rotate,
            translate=[float(u[1]) * self.translate, float(u[2]) * self.translate],
            scale=1.0 + float(u[3]) * self.scale,
            shear=[float(u[4]) * self.shear, 0.0],
            interpolation=InterpolationMode.BILINEAR,
            fill=0.0,
        )
        if self.contrast != 1.0 or self.brightness:
            # Drawn after the warp's five so that runs without exposure jitter keep their exact draws.
            v = torch.rand(2, generator=g) * 2 - 1
            image = image * self.contrast ** float(v[0]) + float(v[1]) * self.brightness
        image = (image - self.mean) / self.std
        if self.noise:
            image = image + self.noise * torch.randn(image.shape, generator=g)
        return image, self.labels[index]


def build(cfg, seed: int = 0) -> DataSplits:
    """The fixed hold-out; with ``cfg.augment`` set, a train split augmented per (seed, epoch, image).

    ``cfg.augment_val`` = K > 0 validates on K augmented copies of every val image instead of the
    clean ones: drawn once from ``VAL_SEED``, so every run and seed is scored on the same images.
    Why: the clean digits are far easier than the warped training images (val error 3-5% against
    8-14% train error, the reverse of ImageNet), which squeezes the gaps between norms against a floor.
    """
    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.long)
    train_idx, val_idx = train_test_split(
        torch.arange(len(labels)).numpy(), test_size=cfg.val_fraction,
        stratify=labels.numpy(), random_state=cfg.split_seed,
    )
    images = F.interpolate(images, size=cfg.image_size, mode="bilinear", align_corners=False)
    # Standardize with the train split's (unaugmented) statistics only.
    mean, std = images[train_idx].mean(), images[train_idx].std()
    aug = cfg.get("augment")
    if aug is not None:
        train = AugmentedDigits(images[train_idx], labels[train_idx], float(mean), float(std), aug, seed)
    else:
        train = TensorDataset((images[train_idx] - mean) / std, labels[train_idx])
    val = TensorDataset((images[val_idx] - mean) / std, labels[val_idx])
    copies = cfg.get("augment_val") or 0
    if copies:
        draws = AugmentedDigits(images[val_idx], labels[val_idx], float(mean), float(std), aug, VAL_SEED)
        xs = []
        for k in range(1, copies + 1):
            draws.set_epoch(k)
            xs.append(torch.stack([draws[i][0] for i in range(len(draws))]))
        val = TensorDataset(torch.cat(xs), labels[val_idx].repeat(copies))
    return DataSplits(
        train=train,
        val=val,
        num_classes=NUM_CLASSES,
        in_channels=1,
    )
