"""Convolutions built from a config string: plain, or with Weight Standardization.

Weight Standardization (Qiao et al., 2019) is a property of the convolution, not of the
normalization layer: GN+WS (used by Big Transfer and the Pets follow-up, docs/PROTOCOL.md) is GN
composed with a WS convolution. Each output filter's weight is standardized over
(in_channels, kH, kW) with the biased variance and eps inside the square root, as in timm's
``StdConv2d``, whose layer (constructor, padding rule, state dict) ``WSConv2d`` extends: only the
standardization differs, computed so that it keeps the weight's memory layout.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from timm.layers import StdConv2d
from torch import nn

from gnrepro.errors import ConfigError

CONVS = ("plain", "ws")
ConvFactory = Callable[..., nn.Conv2d]


def standardize(weight: torch.Tensor, eps: float) -> torch.Tensor:
    """WS: each output filter minus its mean, over the square root of its biased variance plus eps.
    Reduced over (in_channels, kH, kW) in place of timm's reshape to (1, O, -1), which is a view only
    for a contiguous weight and copies a channels_last one every step (and returns it contiguous, so
    the convolution converts it back): the elementwise result keeps ``weight``'s strides."""
    var, mean = torch.var_mean(weight, dim=list(range(1, weight.dim())), keepdim=True, unbiased=False)
    return (weight - mean) * torch.rsqrt(var + eps)


class WSConv2d(StdConv2d):
    """timm's ``StdConv2d`` (same arguments, padding rule and parameters) whose standardized weight
    keeps the weight's memory layout (``standardize``), so a channels_last model never copies it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, standardize(self.weight, self.eps), self.bias, self.stride, self.padding,
                        self.dilation, self.groups)


def build_conv(name: str, *, eps: float = 1e-5) -> ConvFactory:
    """Return a factory ``conv(in_channels, out_channels, kernel_size, stride=1, padding=0)``.

    ``eps`` is WS's epsilon (implementations differ: 1e-5 official WS, 1e-6 timm, 1e-10 BiT).
    Convolutions carry no bias: every one is followed by a normalization layer.
    """
    if name == "plain":
        return partial(nn.Conv2d, bias=False)
    if name == "ws":
        return partial(WSConv2d, bias=False, eps=eps)
    raise ConfigError(f"unknown conv {name!r}; choose one of: {', '.join(CONVS)}")
