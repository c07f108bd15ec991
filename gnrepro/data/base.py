"""What every data set module shares: the splits a builder returns, the one-line data errors, and
the image-file wrapper that turns an unreadable file into such an error (or skips it).

Kept apart from the package's ``__init__`` so that the builders (``digits.py``, ``images.py``)
import these from below, and ``__init__`` imports the builders: no import runs upward.
"""
from __future__ import annotations

import logging
import multiprocessing
import struct
from dataclasses import dataclass, field

import torch
from PIL import Image
from torch.utils.data import Dataset

from gnrepro.errors import UserError

log = logging.getLogger("gnrepro")


class DataError(UserError):
    """A data set that is missing or not in the expected layout: one line, what was expected where
    and how to get it. A UserError, so the trainer prints it as ``gnrepro: error: ...`` (exit 2)."""

    def __init__(self, message: str = ""):
        # A DataLoader worker re-raises our exception in the main process as
        # ``type(err)("Caught X in DataLoader worker process N.\nOriginal Traceback ...\nX: <message>")``
        # (torch/_utils.py, ExceptionWrapper.reraise). Keep only our own last line, so the user
        # still sees one line naming the file, not a worker traceback.
        if "\nOriginal Traceback" in message:
            last = message.rstrip().splitlines()[-1]
            message = last.split(": ", 1)[1] if ": " in last else last
        super().__init__(message)


class BadImageError(DataError):
    """An image file that cannot be decoded."""


@dataclass
class DataSplits:
    train: Dataset
    val: Dataset
    num_classes: int
    in_channels: int
    classes: list[str] | None = None  # class names (or folder names), when the data set has them
    # Shared across DataLoader worker processes: how many unreadable images were skipped
    # (only with data.skip_bad=true); None for data sets that cannot have unreadable files.
    skipped: object | None = field(default=None, repr=False)

    @property
    def skipped_images(self) -> int:
        return 0 if self.skipped is None else int(self.skipped.value)


# What PIL raises on a bad, truncated or hostile file (UnidentifiedImageError is an OSError; some
# broken PNG/GIF chunks raise SyntaxError or struct.error). Transform bugs are not caught.
UNREADABLE = (OSError, SyntaxError, struct.error, Image.DecompressionBombError)


class ImageFiles(Dataset):
    """Wraps a torchvision image data set so that an unreadable file becomes a one-line error
    naming it, or (``skip_bad``) is replaced by the next readable image and counted.

    Replacing rather than dropping keeps every training step at exactly ``batch * workers`` images,
    which the per-worker BN split needs. ``path_of(i)`` gives the file behind sample ``i``; it must
    be picklable (a module-level function or a partial of one), since DataLoader workers started
    with "spawn" (macOS, Windows) receive the data set pickled.
    """

    MAX_SKIPS = 100  # consecutive unreadable files before giving up: the copy is broken, not one file

    def __init__(self, dataset: Dataset, path_of, skip_bad: bool, counter=None):
        self.dataset = dataset
        self.path_of = path_of
        self.skip_bad = skip_bad
        self.counter = counter

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        for attempt in range(self.MAX_SKIPS):
            i = (index + attempt) % len(self.dataset)
            try:
                return self.dataset[i]
            except UNREADABLE as err:
                path = self.path_of(i)
                reason = str(err).splitlines()[0] if str(err) else type(err).__name__
                if not self.skip_bad:
                    raise BadImageError(
                        f"cannot read image {path} ({reason}); delete or replace it, "
                        f"or set data.skip_bad=true to skip unreadable images"
                    ) from None
                total = self._count()
                log.warning("skipped unreadable image %s (%s); %d skipped so far", path, reason, total)
        raise BadImageError(
            f"{self.MAX_SKIPS} unreadable images in a row from {self.path_of(index)} on; "
            f"the data set copy looks broken, re-extract it"
        )

    def _count(self) -> int:
        if self.counter is None:
            return 0
        with self.counter.get_lock():
            self.counter.value += 1
            return self.counter.value


def new_counter():
    """A skip counter shared with DataLoader worker processes (they inherit it when started)."""
    return multiprocessing.get_context().Value("i", 0)


class DeviceStats:
    """A data set's per-channel mean/std as (1, C, 1, 1) tensors, copied to each device once: a copy
    per batch would be a small pageable host-to-device transfer that waits for the device every step."""

    def __init__(self, mean, std):
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
        self._on: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def on(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        key = str(device)
        if key not in self._on:
            self._on[key] = (self.mean.to(device), self.std.to(device))
        return self._on[key]


def normalize_uint8(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) to normalized float32, in torchvision's order (to float, times 1/255, minus
    mean, over std) so the result matches the ``pil`` loader's CPU transforms."""
    return images.to(torch.float32).mul_(1.0 / 255).sub_(mean).div_(std)


def to_device(tensor: torch.Tensor, device) -> torch.Tensor:
    """``tensor`` on ``device``; to a GPU from pinned host memory (pinned here if the DataLoader did
    not) with ``non_blocking=True``, so the copy is queued on the current stream (the loader's side
    stream, gnrepro/data/overlap.py) and the host does not wait for it. On the CPU: the tensor itself."""
    device = torch.device(device)
    if device.type != "cuda" or tensor.is_cuda:
        return tensor.to(device)
    if not tensor.is_pinned():
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)
