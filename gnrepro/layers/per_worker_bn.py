"""Per-worker BatchNorm on one device, and the batch layout it relies on.

The paper's BN computes its statistics over the images of one worker (GPU), never across workers
(Sec. 4.1, footnote 2). A process that hosts n workers gets one batch holding all their images;
this module defines how they are laid out, ``worker_of``: position p of a process's batch belongs
to its ``p % n``-th hosted worker (the workers' images interleaved). The sampler
(gnrepro.data.sampling.StepBatchSampler) builds batches with ``interleave`` and the layer reads them
with ``fold``; both follow ``worker_of``, and tests/layers/test_per_worker_bn.py checks the two together.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from gnrepro.errors import check_positive_int
from gnrepro.layers.norms import EPS

T = TypeVar("T")


def worker_of(position: int, workers: int) -> int:
    """The hosted worker that image ``position`` of a process's batch belongs to (0-based)."""
    return position % workers


def interleave(per_worker: Sequence[Sequence[T]]) -> list[T]:
    """A process's batch from each hosted worker's images (equal counts), in the ``worker_of``
    layout: position p holds image ``p // n`` of worker ``worker_of(p, n)``."""
    n = len(per_worker)
    return [per_worker[worker_of(p, n)][p // n] for p in range(n * len(per_worker[0]))]


def fold(x: torch.Tensor, workers: int) -> torch.Tensor:
    """(B*W, C, H, W) -> (B, W*C, H, W), a view: in the ``worker_of`` layout, row b's channels
    k*C..k*C+C-1 are image b of worker k, so a batch statistic per folded channel is per worker."""
    n = x.shape[0]
    if n % workers:
        raise ValueError(f"a batch of {n} images cannot be split evenly over {workers} workers")
    return x.reshape(n // workers, workers * x.shape[1], *x.shape[2:])


def split(x: torch.Tensor, workers: int) -> torch.Tensor:
    """(B*W, C, H, W) -> (B, W, C, H, W), a view for every memory layout (it splits the batch
    dimension only): in the ``worker_of`` layout, ``split(x, n)[:, k]`` is worker k's images. Unlike
    ``fold``, whose merge of the worker and channel dimensions is a view only for NCHW-contiguous
    input, this never copies a channels_last tensor."""
    n = x.shape[0]
    if n % workers:
        raise ValueError(f"a batch of {n} images cannot be split evenly over {workers} workers")
    return x.view(n // workers, workers, *x.shape[1:])


def per_worker_var_mean(x: torch.Tensor, workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each worker's biased variance and mean per channel, shape (workers, C), computed on the
    ``split`` view (no copy in any layout); row k is worker k, so ``.flatten()`` is ``fold``'s
    channel order."""
    dims = [0, *range(3, x.dim() + 1)]  # (B, W, C, H, W): the images of one worker and every position
    if x.dtype not in (torch.float32, torch.float64):  # 16-bit activations: float32 statistics, as torch's kernel
        x = x.float()
    return torch.var_mean(split(x, workers), dim=dims, unbiased=False)


class PerWorkerBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose statistics are computed separately for each worker's images.

    The paper's "batch size" is images per worker, with BN statistics never shared across workers
    (Sec. 4.1, footnote 2). On one device a step holds the images of ``workers`` workers in the
    layout above (``worker_of``). For NCHW-contiguous input ``fold`` views them, without a copy, as
    one tensor whose channel block k is worker k, and one ``F.batch_norm`` call (the fused kernel)
    normalizes every worker with its own mean and variance. Any other layout (channels_last) cannot
    be folded without a copy to NCHW and back, so there the statistics are reduced on the ``split``
    view and applied as one elementwise affine, whose output keeps the input's strides: the same
    math (biased variance to normalize, eps inside the square root, the running-statistics rule
    below), no layout change.

    Running statistics rule (the same in the multi-process mode): the running mean/var are the
    average over workers of what each worker's own BN layer would have accumulated. Because the
    momentum update is linear, this equals one update with the per-worker batch statistics
    averaged, which is what the forward pass does. With ``workers=1`` this is plain BatchNorm2d.
    """

    def __init__(self, num_features: int, workers: int = 1, eps: float = EPS, momentum: float = 0.1):
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.workers = check_positive_int("workers", workers)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", workers={self.workers}"

    def fold(self, x: torch.Tensor) -> torch.Tensor:
        return fold(x, self.workers)

    def normalize(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``x`` normalized with per-worker batch statistics and per-worker affine ``weight``/``bias``
        (``workers * C`` values, worker-major as ``fold``'s channels), with the running statistics
        rule above; the output has ``x``'s shape and memory layout."""
        if x.is_contiguous():  # the fold is a view: torch's fused batch-norm kernel
            return self.normalize_folded(self.fold(x), weight, bias).reshape(x.shape)
        return self.normalize_split(x, weight, bias)

    def normalize_folded(self, folded: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Per-worker batch statistics and affine ``weight``/``bias`` (one per folded channel), with
        the running statistics rule above."""
        w, c = self.workers, self.num_features
        running_mean = running_var = None
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            running_mean = self.running_mean.repeat(w)
            running_var = self.running_var.repeat(w)
        out = F.batch_norm(folded, running_mean, running_var, weight, bias,
                           training=True, momentum=self.momentum, eps=self.eps)
        if self.track_running_stats:
            with torch.no_grad():
                self.running_mean.copy_(running_mean.view(w, c).mean(0))
                self.running_var.copy_(running_var.view(w, c).mean(0))
        return out

    def normalize_split(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``normalize`` for a layout ``fold`` would copy (channels_last): statistics reduced on the
        ``split`` view, then y = x * scale + shift with scale = gamma / sqrt(var + eps) and
        shift = beta - mean * scale per worker and channel, an elementwise op whose output follows
        ``x``'s strides. Autograd differentiates through the statistics, as BN's backward does."""
        w, c = self.workers, self.num_features
        xs = split(x, w)
        if xs.numel() // (w * c) < 2:  # as F.batch_norm: a variance needs two values
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}"
                             f" over {w} workers")
        var, mean = per_worker_var_mean(x, w)  # (w, c) each
        scale = weight.view(w, c) * torch.rsqrt(var + self.eps)
        shift = bias.view(w, c) - mean * scale
        view = (1, w, c) + (1,) * (x.dim() - 2)
        out = xs * scale.view(view).to(x.dtype) + shift.view(view).to(x.dtype)
        if self.track_running_stats:
            with torch.no_grad():  # F.batch_norm's update (unbiased variance), averaged over workers
                self.num_batches_tracked.add_(1)
                count = xs.numel() // (w * c)  # values per worker and channel
                unbiased = var * (count / max(count - 1, 1))
                self.running_mean.mul_(1 - self.momentum).add_(mean.mean(0), alpha=self.momentum)
                self.running_var.mul_(1 - self.momentum).add_(unbiased.mean(0), alpha=self.momentum)
        return out.reshape(x.shape)  # a view: out has xs's strides

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.workers
        if w == 1 or not self.training:
            return super().forward(x)
        return self.normalize(x, self.weight.repeat(w), self.bias.repeat(w))
