"""The paper's normalization methods, their constants and GN's groups (Wu & He, "Group Normalization", Sec. 3).

The paper casts every method as x_hat = (x - mu) / sqrt(var + eps) over a set S_i, followed by a
per-channel affine gamma/beta (Sec. 3.1). The methods differ only in S_i:

- ``bn``: (N, H, W) per channel, statistics of the images on one *worker* (Sec. 4.1, footnote 2).
- ``gn``: (C/G, H, W) per sample, G groups of consecutive channels (Eq. 7).
- ``ln``: GN with G = 1 (Sec. 3.1, "LN ... is a special case of GN").
- ``in``: GN with one channel per group (G = C).

``brn`` is Batch Renorm on BN's per-worker statistics (gnrepro.layers.batch_renorm, Sec. 4.1); ``none`` is no
layer at all (VGG-16 without normalization, Sec. 4.1).

This module holds the paper's constants, GN's group arithmetic and the GN layer (``GroupNorm``, which
LN and IN are with G = 1 and G = C). Per-worker BN is in gnrepro.layers.per_worker_bn, Batch Renorm in
gnrepro.layers.batch_renorm; which name builds which layer is gnrepro.layers.norm_registry's table.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gnrepro.errors import ConfigError, check_positive_int

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
        check_positive_int("norm.channels_per_group", channels_per_group)
        if num_channels % channels_per_group:
            raise ConfigError(
                f"GN with channels_per_group={channels_per_group} cannot split a layer of {num_channels} "
                f"channels; valid norm.channels_per_group for it: {_divisors(num_channels)}"
            )
        return num_channels // channels_per_group
    g = DEFAULT_GROUPS if groups is None else groups
    check_positive_int("norm.groups", g)
    if num_channels % g:
        raise ConfigError(
            f"GN with groups={g} cannot split a layer of {num_channels} channels (G must divide C); "
            f"valid norm.groups for it: {_divisors(num_channels)}"
        )
    return g


def group_norm(x: torch.Tensor, groups: int, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
               eps: float = EPS) -> torch.Tensor:
    """GN (Sec. 3.1, Eq. 7): per sample, mean and biased variance over each group of C/G consecutive
    channels and all positions, then the per-channel affine; the output keeps ``x``'s memory layout.

    NCHW-contiguous input goes to torch's fused kernel (``F.group_norm``). Any other layout
    (channels_last) does not: torch's CUDA kernel, eager and Inductor's decomposition alike, returns
    NCHW strides for it, so the next convolution converts back. There the statistics are reduced on
    the (N, G, C/G, H, W) view (a view for channels_last: it splits the unit-stride channel dim) and
    applied as one elementwise affine y = x * scale + shift, scale = gamma / sqrt(var + eps) and
    shift = beta - mean * scale per sample and channel, whose output follows ``x``'s strides.
    Under autocast it computes in float32 like torch's kernel (autocast's float32 list)."""
    if x.is_contiguous():
        return F.group_norm(x, groups, weight, bias, eps)
    if torch.is_autocast_enabled(x.device.type):
        x = x.float()  # preserves the layout
    n, c = x.shape[:2]
    stats = x if x.dtype in (torch.float32, torch.float64) else x.float()  # float32 statistics at least
    grouped = stats.unflatten(1, (groups, c // groups))  # splitting one dim: a view in every layout
    var, mean = torch.var_mean(grouped, dim=[2, *range(3, x.dim() + 1)], unbiased=False)  # (N, G)
    scale = torch.rsqrt(var + eps).repeat_interleave(c // groups, dim=1)  # (N, C)
    shift = -mean.repeat_interleave(c // groups, dim=1) * scale
    if weight is not None:
        scale = scale * weight
        shift = shift * weight
    if bias is not None:
        shift = shift + bias
    view = (n, c) + (1,) * (x.dim() - 2)
    return x * scale.view(view).to(x.dtype) + shift.view(view).to(x.dtype)


class GroupNorm(nn.GroupNorm):
    """GN with G groups (Sec. 3.1); ``num_channels`` first, like every norm factory's layer.
    LN is G = 1 and IN is G = C (Sec. 3.1). The forward is ``group_norm``: the output keeps the input's
    memory layout (channels_last stays channels_last); parameters and state dict are nn.GroupNorm's."""

    def __init__(self, num_channels: int, num_groups: int = DEFAULT_GROUPS, eps: float = EPS, affine: bool = True):
        super().__init__(num_groups, num_channels, eps=eps, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
