"""Normalization layers built from a config string (Wu & He, "Group Normalization", Sec. 3).

The paper casts every method as x_hat = (x - mu) / sqrt(var + eps) over a set S_i, followed by a
per-channel affine gamma/beta (Sec. 3.1). The methods differ only in S_i:

- ``bn``: (N, H, W) per channel, statistics of the images on one *worker* (Sec. 4.1, footnote 2).
- ``gn``: (C/G, H, W) per sample, G groups of consecutive channels (Eq. 7).
- ``ln``: GN with G = 1 (Sec. 3.1, "LN ... is a special case of GN").
- ``in``: GN with one channel per group (G = C).

``brn`` is Batch Renorm on BN's per-worker statistics (gnrepro.batch_renorm, Sec. 4.1); ``none`` is no
layer at all (VGG-16 without normalization, Sec. 4.1).

All arithmetic is torch's own kernels (``F.batch_norm`` / ``F.group_norm``); this module only
chooses S_i. The channels-first factory signature follows timm's norm layers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import GroupNorm
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from gnrepro.errors import ConfigError

NORMS = ("bn", "brn", "gn", "ln", "in", "none")  # brn: gnrepro.batch_renorm; none: VGG only
EPS = 1e-5  # the paper's epsilon for every normalization
DEFAULT_GROUPS = 32  # the paper's G when neither norm.groups nor norm.channels_per_group is set


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def num_groups(num_channels: int, groups: int | None = None, channels_per_group: int | None = None) -> int:
    """Resolve GN's group count for a layer of ``num_channels`` channels (paper Table 3, top/bottom).

    Exactly one of ``groups`` (fixed G for every layer) or ``channels_per_group`` (fixed C/G, so G
    varies with the layer width) may be given; with neither, the paper's default G = 32 applies.
    """
    if groups is not None and channels_per_group is not None:
        raise ConfigError(
            f"GN got both groups={groups} and channels_per_group={channels_per_group}; "
            "set exactly one of norm.groups or norm.channels_per_group (the other to null)"
        )
    if channels_per_group is not None:
        if not isinstance(channels_per_group, int) or channels_per_group < 1:
            raise ConfigError(f"norm.channels_per_group must be a positive integer, got {channels_per_group!r}")
        if num_channels % channels_per_group:
            raise ConfigError(
                f"GN with channels_per_group={channels_per_group} cannot split a layer of {num_channels} "
                f"channels; valid norm.channels_per_group for it: {_divisors(num_channels)}"
            )
        return num_channels // channels_per_group
    g = DEFAULT_GROUPS if groups is None else groups
    if not isinstance(g, int) or g < 1:
        raise ConfigError(f"norm.groups must be a positive integer, got {g!r}")
    if num_channels % g:
        raise ConfigError(
            f"GN with groups={g} cannot split a layer of {num_channels} channels (G must divide C); "
            f"valid norm.groups for it: {_divisors(num_channels)}"
        )
    return g


class PerWorkerBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose statistics are computed separately for each worker's images.

    The paper's "batch size" is images per worker, with BN statistics never shared across workers
    (Sec. 4.1, footnote 2). On one device a step holds the images of ``workers`` workers,
    interleaved: image i belongs to worker ``i % workers`` (gnrepro.sampling lays batches out so).
    Then (B*W, C, H, W) is, without any copy, a (B, W*C, H, W) tensor whose channel k*C + c is
    channel c of worker k, and one ``F.batch_norm`` call normalizes every worker with its own
    mean and variance.

    Running statistics rule (the same in the multi-process mode): the running mean/var are the
    average over workers of what each worker's own BN layer would have accumulated. Because the
    momentum update is linear, this equals one update with the per-worker batch statistics
    averaged, which is what the forward pass does. With ``workers=1`` this is plain BatchNorm2d.
    """

    def __init__(self, num_features: int, workers: int = 1, eps: float = EPS, momentum: float = 0.1):
        super().__init__(num_features, eps=eps, momentum=momentum)
        if not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"workers must be a positive integer, got {workers!r}")
        self.workers = workers

    def extra_repr(self) -> str:
        return super().extra_repr() + f", workers={self.workers}"

    def fold(self, x: torch.Tensor) -> torch.Tensor:
        """(B*W, C, H, W) -> (B, W*C, H, W), a view: worker k's channels at k*C..k*C+C-1."""
        n, w = x.shape[0], self.workers
        if n % w:
            raise ValueError(f"a batch of {n} images cannot be split evenly over {w} workers")
        return x.reshape(n // w, w * x.shape[1], *x.shape[2:])

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.workers
        if w == 1 or not self.training:
            return super().forward(x)
        return self.normalize_folded(self.fold(x), self.weight.repeat(w), self.bias.repeat(w)).reshape(x.shape)


def build_norm(
    name: str,
    num_channels: int,
    *,
    groups: int | None = None,
    channels_per_group: int | None = None,
    workers: int = 1,
    eps: float = EPS,
    sync: bool = False,
    frozen: bool = False,
    **renorm,
) -> nn.Module | None:
    """Build the normalization layer ``name`` for a layer with ``num_channels`` channels.

    ``groups``/``channels_per_group`` apply to ``gn`` only; ``workers``, ``sync`` and ``frozen`` to
    ``bn`` only (``workers`` also to ``brn``, whose options ``renorm`` are those of
    PerWorkerBatchRenorm2d). Every layer has a per-channel affine gamma/beta, initialised to 1/0.
    ``none`` builds no layer (returns None), for models that can leave it out (VGG-16 without
    normalization, paper Sec. 4.1). ``frozen`` is the paper's BN* for transfer (Sec. 5): BN turned
    into a fixed per-channel affine that uses its pretrained running statistics (torchvision's
    FrozenBatchNorm2d: nothing is trained or updated).
    """
    if renorm and name != "brn":
        raise ConfigError(f"norm {name!r} has no {', '.join(sorted(renorm))}; those apply to norm=brn only")
    if frozen and name != "bn":
        raise ConfigError(f"norm.frozen applies to norm=bn only, not {name!r}")
    if name != "gn" and (groups is not None or channels_per_group is not None):
        raise ConfigError(f"norm {name!r} has no groups; norm.groups / norm.channels_per_group apply to norm=gn only")
    if name == "bn":
        if frozen:
            if sync:
                raise ConfigError("norm.frozen=true and norm.sync=true exclude each other: frozen BN has no batch statistics")
            return FrozenBatchNorm2d(num_channels, eps=eps)
        if sync:
            return nn.SyncBatchNorm(num_channels, eps=eps)
        return PerWorkerBatchNorm2d(num_channels, workers=workers, eps=eps)
    if name == "brn":
        from gnrepro.batch_renorm import (
            PerWorkerBatchRenorm2d,  # it subclasses this module's BN
        )

        return PerWorkerBatchRenorm2d(num_channels, workers=workers, eps=eps, **renorm)
    if name == "none":
        return None
    if name == "gn":
        return GroupNorm(num_channels, num_groups(num_channels, groups, channels_per_group), eps=eps)
    if name == "ln":
        return GroupNorm(num_channels, 1, eps=eps)
    if name == "in":
        return GroupNorm(num_channels, num_channels, eps=eps)
    raise ConfigError(f"unknown norm {name!r}; choose one of: {', '.join(NORMS)}")
