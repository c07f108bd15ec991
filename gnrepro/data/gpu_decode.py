"""``data.loader=gpu``: JPEGs decoded and augmented on the GPU with torchvision.io (nvJPEG).

The DataLoader workers only read each file's bytes and draw its augmentation, exactly the paper's
(Sec. 4.1): a RandomResizedCrop box (scale 8%-100% of the area, aspect ratio 3/4-4/3, drawn with
torchvision's own ``RandomResizedCrop.get_params`` from the image size in the JPEG header, nothing
decoded) and a horizontal flip with probability 1/2. On the loader thread (gnrepro/data/overlap.py,
one batch ahead of the step) one batched ``torchvision.io.decode_jpeg(..., device="cuda")`` call
decodes them, and the batch is cropped, resized to 224 (antialiased bilinear, torchvision's filter),
flipped and normalized on the GPU in batched operations (``resample``). Evaluation: shorter side to
256, the center 224 crop. The crops are drawn by the workers' generators, as with the PIL loader.

Why torchvision.io and not NVIDIA DALI (the usual anchor for a fed GPU):

* torchvision is already a pinned dependency; DALI (``nvidia-dali-cuda130`` / ``-cuda120`` on PyPI,
  the optional ``dali`` extra, 551 MB installed) is built per CUDA major version and would be one
  more thing to match to the driver;
* DALI brings its own reader, shuffling and iterator: keeping our (seed, epoch) step order and the
  per-worker BN interleaving (gnrepro/data/sampling.py) would mean feeding it through
  ``fn.external_source``, and its one-line bad-file errors (``data.skip_bad``) would have to be
  rebuilt; here the Dataset, the sampler and ImageFiles are unchanged;
* the same code runs on the CPU (``decode_jpeg`` on CPU), so the tests check the crops on a machine
  without a GPU.

What DALI would do better: it decodes only the crop's region (``fn.decoders.image_random_crop``)
and overlaps the host-side Huffman stage with the GPU, so at thousands of images/s per GPU it can
be faster (not measured on a GPU: ``scripts/bench_input_pipeline.py --dali`` times DALI's own
ResNet-50 pipeline beside this loader; docs/gpu.md).

Files that are not RGB/grey JPEGs (a PNG or CMYK JPEG saved as ``.jpg``, as in Oxford-IIIT Pets)
are decoded by PIL in the worker and only resized on the GPU. A file PIL cannot open is named by
ImageFiles as with the PIL loader; a JPEG whose header is fine but whose data is truncated fails
in the GPU decode, for the whole batch, without the file's name.
"""
from __future__ import annotations

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import RandomResizedCrop, v2
from torchvision.transforms.v2.functional import pil_to_tensor

from gnrepro.data.base import DeviceStats, normalize_uint8, to_device

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
                # bytes in an ordinary storage: torchvision's read_file maps the file (torch.from_file),
                # and such a storage cannot pass from a DataLoader worker (os.dup fails: the worker
                # hangs the loader), so data.num_workers > 0 needs a copy in memory
                with open(path, "rb") as f:
                    payload = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)
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
            images[k] = to_device(p, device)
    return images


def train_view(image: torch.Tensor, box, size: int) -> torch.Tensor:
    """Crop ``box`` (top, left, height, width, flip) out of ``image``, resize to ``size``^2, maybe flip."""
    top, left, height, width, flip = (int(v) for v in box)
    out = v2.functional.resized_crop(image, top, left, height, width, [size, size], antialias=True)
    return out.flip(-1) if flip else out


def eval_view(image: torch.Tensor, resize: int, crop: int) -> torch.Tensor:
    """Shorter side to ``resize`` (aspect kept), then the center ``crop``^2."""
    return v2.functional.center_crop(v2.functional.resize(image, [resize], antialias=True), [crop, crop])


# ------------------------------------------------------------------ batched crops (Sec. 4.1, unchanged)
#
# torchvision's tensor resize with antialias=True (what ``train_view``/``eval_view`` call per image) is
# ATen's separable ``_upsample_bilinear2d_aa``: output pixel i of an axis of ``length`` input pixels
# resized to ``out`` takes the input pixels j (0-based, inside the crop) with the triangle weights
# max(0, 1 - |(j + 0.5 - center) * invscale|), center = scale * (i + 0.5), scale = length / out,
# invscale = 1 / max(scale, 1), normalized to sum 1. Written as a matrix per axis (rows: outputs,
# columns: the image's pixels, zero outside the crop), a whole batch's crops are A @ X @ B^T: two
# batched matrix products instead of one resized_crop per image. The crop box, the flip (B's rows
# reversed) and the evaluation's resize + center crop (rows of the resize matrix) all live in A and B.
# torchvision.ops.roi_align would also crop many boxes at once, but it averages bilinear samples over
# each output bin (a box filter), which is not the triangle filter above: its crops differ from the
# PIL/torchvision ones by several grey levels, so the protocol's augmentation would change.

GEOMETRY = 9  # per image: top, height, resized height, row offset, left, width, resized width, column offset, flip
PAD_WASTE = 2.0  # images share a zero-padded canvas at most twice their own size (bounded wasted work)


def resized_size(height: int, width: int, short: int) -> tuple[int, int]:
    """torchvision's ``resize(image, [short])``: the shorter side to ``short``, the other truncated
    (``_compute_resized_output_size``)."""
    if width <= height:
        return int(short * height / width), short
    return short, int(short * width / height)


def center_offset(size: int, crop: int) -> int:
    """Where torchvision's ``center_crop`` starts along an axis of ``size`` pixels (negative: it pads)."""
    if crop > size:
        return -((crop - size) // 2)
    return int(round((size - crop) / 2.0))


def train_geometry(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(N, GEOMETRY) float64 from the workers' (N, 5) boxes: each box resized to ``size``^2, no offset.
    Tensor operations only (no ``tolist``), so nothing here waits for a device."""
    top, left, height, width, flip = boxes.to(torch.float64).unbind(1)
    out, zero = torch.full_like(top, size), torch.zeros_like(top)
    return torch.stack([top, height, out, zero, left, width, out, zero, flip], 1)


def eval_geometry(sizes: list[tuple[int, int]], resize: int, crop: int) -> torch.Tensor:
    """(N, GEOMETRY) float64: the whole image resized (shorter side ``resize``), the center ``crop``."""
    rows = []
    for height, width in sizes:  # host integers from the decoded tensors' shapes: no device access
        new_h, new_w = resized_size(height, width, resize)
        rows.append([0, height, new_h, center_offset(new_h, crop), 0, width, new_w, center_offset(new_w, crop), 0])
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, GEOMETRY)


def axis_weights(start, length, resized, offset, flip, out: int, extent: int) -> torch.Tensor:
    """(N, out, extent) float32 antialiased-bilinear weights of one axis for every image at once: output
    pixel i is pixel i + offset of the crop [start, start + length) resized to ``resized`` pixels
    (reversed where ``flip``); columns are the canvas' ``extent`` pixels. Outputs outside the resized
    image (a center crop larger than it) get no weights: black, as torchvision's padding."""
    device = start.device
    i = torch.arange(out, device=device, dtype=torch.float32)[None, :]
    i = torch.where(flip[:, None] > 0, out - 1 - i, i)
    scale = (length / resized)[:, None]                      # float32, as ATen's area_pixel_compute_scale
    center = scale * (i + offset[:, None] + 0.5)
    invscale = 1.0 / scale.clamp(min=1.0)                    # downscaling widens the triangle
    j = torch.arange(extent, device=device, dtype=torch.float32)[None, None, :] - start[:, None, None]
    weights = (1 - ((j + 0.5 - center[:, :, None]) * invscale[:, :, None]).abs()).clamp(min=0)
    weights = weights * ((j >= 0) & (j < length[:, None, None]))  # only the crop's pixels
    inside = (i + offset[:, None] >= 0) & (i + offset[:, None] < resized[:, None])
    weights = weights * inside[:, :, None]
    total = weights.sum(-1, keepdim=True)
    return weights / torch.where(total > 0, total, torch.ones_like(total))


def canvases(sizes: list[tuple[int, int]], waste: float = PAD_WASTE) -> list[tuple[list[int], int, int]]:
    """Group images (by index) onto shared zero-padded canvases (height, width): largest first, each
    joining the first canvas that stays within ``waste`` times the pixels of every image on it, so a
    batch of ImageNet-like sizes needs one or a few groups and a huge image shares with none."""
    groups: list[list] = []  # [indices, height, width, pixels of its smallest image]
    for k in sorted(range(len(sizes)), key=lambda k: -sizes[k][0] * sizes[k][1]):
        h, w = sizes[k]
        for group in groups:
            ch, cw = max(group[1], h), max(group[2], w)
            if ch * cw <= waste * min(group[3], h * w):
                group[0].append(k)
                group[1], group[2], group[3] = ch, cw, min(group[3], h * w)
                break
        else:
            groups.append([[k], h, w, h * w])
    return [(sorted(g[0]), g[1], g[2]) for g in groups]


def resample(images: list, geometry: torch.Tensor, out: int, waste: float = PAD_WASTE) -> torch.Tensor:
    """float32 (N, C, out, out) crops of the uint8 CHW ``images`` (on one device) as torchvision's
    antialiased ``resized_crop``/``resize`` + ``center_crop`` make them, before rounding to uint8.
    ``geometry``: (N, GEOMETRY) rows on the images' device. Per group of images sharing a canvas:
    one stack (or a padded copy), two batched matrix products; one copy of the indices, no host sync."""
    device = geometry.device
    sizes = [tuple(image.shape[-2:]) for image in images]  # shapes are host metadata
    groups = canvases(sizes, waste)
    g = geometry.to(torch.float32)
    height = max(h for _, h, _ in groups)
    width = max(w for _, _, w in groups)
    rows = axis_weights(g[:, 0], g[:, 1], g[:, 2], g[:, 3], torch.zeros_like(g[:, 8]), out, height)
    cols = axis_weights(g[:, 4], g[:, 5], g[:, 6], g[:, 7], g[:, 8], out, width)
    order = torch.tensor([k for members, _, _ in groups for k in members], dtype=torch.int64)
    order = to_device(order, device)  # one small pinned copy for every group's index
    result = torch.empty((len(images), images[0].shape[0], out, out), dtype=torch.float32, device=device)
    start = 0
    for members, h, w in groups:
        index = order[start:start + len(members)]
        start += len(members)
        if all(sizes[k] == (h, w) for k in members):
            canvas = torch.stack([images[k] for k in members])
        else:
            canvas = images[members[0]].new_zeros((len(members), images[members[0]].shape[0], h, w))
            for slot, k in enumerate(members):  # one copy kernel per image: the decoder returns separate tensors
                canvas[slot, :, :sizes[k][0], :sizes[k][1]].copy_(images[k])
        x = canvas.to(torch.float32)
        a, b = rows.index_select(0, index)[:, :, :h], cols.index_select(0, index)[:, :, :w]
        if h <= w:  # contract the longer axis first: fewer multiply-adds
            crops = torch.einsum("gsh,gcht->gcst", a, torch.einsum("gchw,gtw->gcht", x, b))
        else:
            crops = torch.einsum("gcsw,gtw->gcst", torch.einsum("gsh,gchw->gcsw", a, x), b)
        result.index_copy_(0, index, crops)
    return result


class DecodeOnDevice:
    """``prepare`` of ``data.loader=gpu`` (see gnrepro/data/device_feed.py): a collated batch of
    EncodedImages to normalized float32 images and labels on the device, the paper's augmentation
    (Sec. 4.1) with batched crops (``resample``). With ``per_image=True`` the reference path: one
    torchvision ``resized_crop`` (or resize + center crop) per image, as before the batched crops."""

    def __init__(self, cfg, train: bool, per_image: bool = False):
        self.train, self.per_image = train, per_image
        self.size, self.resize, self.crop = int(cfg.train_crop), int(cfg.eval_resize), int(cfg.eval_crop)
        self.stats = DeviceStats(cfg.mean, cfg.std)

    def views(self, payloads, boxes, device) -> torch.Tensor:
        """The uint8 (N, 3, S, S) batch of augmented (train) or center-cropped (eval) images."""
        images = decode(payloads, device)
        if self.per_image:
            if self.train:
                return torch.stack([train_view(im, box, self.size) for im, box in zip(images, boxes.tolist())])
            return torch.stack([eval_view(im, self.resize, self.crop) for im in images])
        return self.crops(images, boxes, device).round_().clamp_(0, 255).to(torch.uint8)

    def crops(self, images, boxes, device) -> torch.Tensor:
        """float32 crops before rounding (``resample``) of decoded ``images`` for this split."""
        if self.train:
            geometry = train_geometry(boxes, self.size)
            out = self.size
        else:
            geometry = eval_geometry([tuple(im.shape[-2:]) for im in images], self.resize, self.crop)
            out = self.crop
        return resample(images, to_device(geometry, device), out)

    def __call__(self, batch, device):
        payloads, boxes, labels = batch
        mean, std = self.stats.on(device)
        if self.per_image:
            images = normalize_uint8(self.views(payloads, boxes, device), mean, std)
        else:  # uint8 levels kept in float32: the same numbers as normalize_uint8 of the rounded crops
            crops = self.crops(decode(payloads, device), boxes, device)
            images = crops.round_().clamp_(0, 255).mul_(1.0 / 255).sub_(mean).div_(std)
        return images, to_device(labels, device)


def cuda_decode_problem() -> str | None:
    """Why ``data.loader=gpu`` cannot run here (one clause), or None when it can."""
    if not torch.cuda.is_available():
        return "this machine has no CUDA GPU (torch.cuda.is_available() is false)"
    if not hasattr(torch.ops.image, "decode_jpegs_cuda"):
        return "this torchvision build has no GPU JPEG decoder (torchvision.io.decode_jpeg(device='cuda'))"
    return None
