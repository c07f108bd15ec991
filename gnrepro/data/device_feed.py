"""How a batch reaches the model's device: ``data.loader`` of the data sets on disk (ImageNet, Pets, Imagenette).

* ``pil`` (the default): PIL decodes and the paper's transforms (Sec. 4.1) run in the DataLoader
  workers, which also scale to [0, 1] and normalize; float32 batches are copied to the device.
* ``pil_uint8``: the same PIL decode and the same geometric transforms, but the batch stays uint8
  (a quarter of the bytes to pin and copy) and ``(x / 255 - mean) / std`` runs on the device, in
  the same float32 operations as torchvision's ToDtype + Normalize, so the tensor is the ``pil`` one.
* ``gpu``: the workers only read the JPEG bytes and draw the crop; decoding (nvJPEG through
  ``torchvision.io.decode_jpeg(device="cuda")``), crop, resize, flip and normalization run on the
  GPU (gnrepro/data/gpu_decode.py, where the choice over NVIDIA DALI is explained).

Either way the trainer's loop sees ``(images, targets)`` already on the device, so it needs no
change: its own ``.to(device)`` is then a no-op. On a CUDA device every loader prepares each batch
one step ahead, on a loader thread and a side stream, handed over with an event
(gnrepro/data/overlap.py), so decode, crops and the host-to-device copies overlap the training step
(``pil``: the copy of its float batch, which otherwise ran on the compute stream, issue 23). On a
CPU ``pil`` batches are the DataLoader's own.
"""
from __future__ import annotations

import torch

from gnrepro.data.base import DeviceStats, normalize_uint8, to_device
from gnrepro.data.gpu_decode import DecodeOnDevice, collate_encoded
from gnrepro.data.overlap import Ahead, StreamHandoff

LOADERS = ("pil", "pil_uint8", "gpu")
DEFAULT_LOADER = "pil"


def loader_name(cfg) -> str:
    """``data.loader``; data sets without the key (digits, CIFAR) use the default."""
    return cfg.get("loader", DEFAULT_LOADER) or DEFAULT_LOADER


class DeviceBatches:
    """Iterates ``loader`` and hands each batch to ``prepare(batch, device) -> (images, targets)`` on
    ``device``. Keeps ``len()`` (the progress bar and the schedule read it).

    ``overlap``: prepare one batch ahead on a loader thread and a side stream (``overlap.Ahead``);
    None (the default) means on a CUDA device only. ``handoff`` replaces the stream hand-over (tests)."""

    def __init__(self, loader, prepare, device, overlap: bool | None = None, handoff=None):
        self.loader, self.prepare, self.device = loader, prepare, torch.device(device)
        self.overlap = self.device.type == "cuda" if overlap is None else overlap
        self.handoff = handoff

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        if self.overlap:
            if self.handoff is None:  # one side stream for the loader's lifetime
                self.handoff = StreamHandoff(self.device)
            return Ahead(iter(self.loader), lambda batch: self.prepare(batch, self.device), self.handoff)
        return self._serial()

    def _serial(self):
        for batch in self.loader:
            yield self.prepare(batch, self.device)


def copy_to_device(batch, device):
    """``prepare`` of ``pil`` on a GPU: the normalized float batch and its labels, copied from pinned memory."""
    images, targets = batch
    return to_device(images, device), to_device(targets, device)


class NormalizeOnDevice:
    """``prepare`` of ``pil_uint8``: copy the uint8 batch (pinned: asynchronously) and normalize it there."""

    def __init__(self, mean, std):
        self.stats = DeviceStats(mean, std)

    def __call__(self, batch, device):
        images, targets = copy_to_device(batch, device)
        return normalize_uint8(images, *self.stats.on(device)), targets


def feed(loader, cfg, device=None, train: bool = True, overlap: bool | None = None):
    """``loader`` as the trainer iterates it for ``data.loader``: batches arrive normalized on
    ``device``, prepared one batch ahead on a CUDA device (``overlap=False``: in the loop, as before;
    the benchmarks' baseline). ``pil`` on a CPU (or not overlapped): the loader itself, whose batches
    the trainer moves (bit for bit the same tensors either way)."""
    name = loader_name(cfg)
    device = torch.device("cpu") if device is None else torch.device(device)
    if name == "pil":
        ahead = device.type == "cuda" if overlap is None else overlap
        return DeviceBatches(loader, copy_to_device, device, overlap=True) if ahead else loader
    if name == "pil_uint8":
        return DeviceBatches(loader, NormalizeOnDevice(cfg.mean, cfg.std), device, overlap)
    return DeviceBatches(loader, DecodeOnDevice(cfg, train=train), device, overlap)


def collate_fn(cfg):
    """The DataLoader's ``collate_fn`` for ``data.loader`` (None: torch's default stacking)."""
    if loader_name(cfg) == "gpu":
        return collate_encoded
    return None
