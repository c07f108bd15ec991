"""``data.loader=gpu``: JPEGs decoded and augmented on the GPU with torchvision.io (nvJPEG).

The DataLoader workers only read each file's bytes and draw its augmentation, exactly the paper's
(Sec. 4.1): a RandomResizedCrop box (scale 8%-100% of the area, aspect ratio 3/4-4/3, drawn with
torchvision's own ``RandomResizedCrop.get_params`` from the image size in the JPEG header, nothing
decoded) and a horizontal flip with probability 1/2. In the main process one batched
``torchvision.io.decode_jpeg(..., device="cuda")`` call decodes them, and each image is cropped,
resized to 224 (antialiased bilinear), flipped and normalized on the GPU. Evaluation: shorter side
to 256, the center 224 crop. The crops are drawn by the workers' generators, as with the PIL loader.

Why torchvision.io and not NVIDIA DALI (the usual anchor for a fed GPU):

* torchvision is already a pinned dependency; DALI is not on PyPI's default index (it comes from
  NVIDIA's, ``pip install --extra-index-url https://pypi.nvidia.com nvidia-dali-cuda120``), is
  built per CUDA major version and would be one more thing to match to the driver;
* DALI brings its own reader, shuffling and iterator: keeping our (seed, epoch) step order and the
  per-worker BN interleaving (gnrepro/data/sampling.py) would mean feeding it through
  ``fn.external_source``, and its one-line bad-file errors (``data.skip_bad``) would have to be
  rebuilt; here the Dataset, the sampler and ImageFiles are unchanged;
* the same code runs on the CPU (``decode_jpeg`` on CPU), so the tests check the crops on a machine
  without a GPU.

What DALI would do better: it decodes only the crop's region (``fn.decoders.image_random_crop``)
and overlaps the host-side Huffman stage with the GPU, so at thousands of images/s per GPU it can
be faster; ``scripts/bench_input_pipeline.py data.loader=gpu`` says whether this path keeps up.

Files that are not RGB/grey JPEGs (a PNG or CMYK JPEG saved as ``.jpg``, as in Oxford-IIIT Pets)
are decoded by PIL in the worker and only resized on the GPU. A file PIL cannot open is named by
ImageFiles as with the PIL loader; a JPEG whose header is fine but whose data is truncated fails
in the GPU decode, for the whole batch, without the file's name.
"""
from __future__ import annotations

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg, read_file
from torchvision.transforms import RandomResizedCrop, v2
from torchvision.transforms.v2.functional import pil_to_tensor

from gnrepro.data.base import DeviceStats, normalize_uint8

SCALE = (0.08, 1.0)        # RandomResizedCrop's area range (the paper's scale augmentation)
RATIO = (3 / 4, 4 / 3)     # and aspect-ratio range; torchvision's defaults, as the PIL loader uses
GPU_MODES = ("RGB", "L")   # JPEG colour modes nvJPEG decodes to RGB; others go through PIL


class EncodedImages(torch.utils.data.Dataset):
    """(file bytes or, for a non-JPEG, decoded uint8 CHW; crop box + flip as int64[5]; label).

    ``train``: draw a RandomResizedCrop box (top, left, height, width) and a flip; otherwise all zeros.
    """

    def __init__(self, paths: list, labels: list[int], train: bool):
        self.paths, self.labels, self.train = [str(p) for p in paths], list(labels), train

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        path = self.paths[index]
        with Image.open(path) as image:  # reads the header only: size, format, colour mode
            if image.format == "JPEG" and image.mode in GPU_MODES:
                payload = read_file(path)
            else:
                payload = pil_to_tensor(image.convert("RGB"))
            box = draw_box(image) if self.train else (0, 0, 0, 0, 0)
        return payload, torch.tensor(box, dtype=torch.int64), self.labels[index]


def draw_box(image) -> tuple[int, int, int, int, int]:
    """The paper's training augmentation for one image: a RandomResizedCrop box and a flip bit."""
    top, left, height, width = RandomResizedCrop.get_params(image, scale=list(SCALE), ratio=list(RATIO))
    return top, left, height, width, int(torch.rand(1).item() < 0.5)


def collate_encoded(samples):
    """Payloads stay a list (their sizes differ); boxes and labels are stacked."""
    payloads, boxes, labels = zip(*samples)
    return list(payloads), torch.stack(boxes), torch.tensor(labels, dtype=torch.int64)


def decode(payloads: list, device) -> list:
    """uint8 CHW RGB images on ``device``: JPEG bytes in one batched decode there, the rest copied."""
    device = torch.device(device)
    images = [None] * len(payloads)
    encoded = [k for k, p in enumerate(payloads) if p.ndim == 1]
    if encoded:
        decoded = decode_jpeg([payloads[k] for k in encoded], mode=ImageReadMode.RGB, device=device)
        for k, image in zip(encoded, decoded):
            images[k] = image
    for k, p in enumerate(payloads):
        if p.ndim == 3:
            images[k] = p.to(device, non_blocking=True)
    return images


def train_view(image: torch.Tensor, box, size: int) -> torch.Tensor:
    """Crop ``box`` (top, left, height, width, flip) out of ``image``, resize to ``size``^2, maybe flip."""
    top, left, height, width, flip = (int(v) for v in box)
    out = v2.functional.resized_crop(image, top, left, height, width, [size, size], antialias=True)
    return out.flip(-1) if flip else out


def eval_view(image: torch.Tensor, resize: int, crop: int) -> torch.Tensor:
    """Shorter side to ``resize`` (aspect kept), then the center ``crop``^2."""
    return v2.functional.center_crop(v2.functional.resize(image, [resize], antialias=True), [crop, crop])


class DecodeOnDevice:
    """``prepare`` of ``data.loader=gpu`` (see gnrepro/data/device_feed.py): a collated batch of
    EncodedImages to normalized float32 images and labels on the device."""

    def __init__(self, cfg, train: bool):
        self.train = train
        self.size, self.resize, self.crop = int(cfg.train_crop), int(cfg.eval_resize), int(cfg.eval_crop)
        self.stats = DeviceStats(cfg.mean, cfg.std)

    def views(self, payloads, boxes, device) -> torch.Tensor:
        """The uint8 (N, 3, S, S) batch of augmented (train) or center-cropped (eval) images."""
        images = decode(payloads, device)
        if self.train:
            return torch.stack([train_view(im, box, self.size) for im, box in zip(images, boxes.tolist())])
        return torch.stack([eval_view(im, self.resize, self.crop) for im in images])

    def __call__(self, batch, device):
        payloads, boxes, labels = batch
        images = self.views(payloads, boxes, device)
        return normalize_uint8(images, *self.stats.on(device)), labels.to(device, non_blocking=True)


def cuda_decode_problem() -> str | None:
    """Why ``data.loader=gpu`` cannot run here (one clause), or None when it can."""
    if not torch.cuda.is_available():
        return "this machine has no CUDA GPU (torch.cuda.is_available() is false)"
    if not hasattr(torch.ops.image, "decode_jpegs_cuda"):
        return "this torchvision build has no GPU JPEG decoder (torchvision.io.decode_jpeg(device='cuda'))"
    return None
