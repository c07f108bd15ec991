"""Convolutions built from a config string: plain, or with Weight Standardization.

Weight Standardization (Qiao et al., 2019) is a property of the convolution, not of the
normalization layer: GN+WS (used by Big Transfer and the Pets follow-up, docs/PROTOCOL.md) is GN
composed with a WS convolution. Each output filter's weight is standardized over
(in_channels, kH, kW) with the biased variance and eps inside the square root, as in timm's
``StdConv2d``, whose layer we reuse.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

from timm.layers import StdConv2d
from torch import nn

from gnrepro.errors import ConfigError

CONVS = ("plain", "ws")
ConvFactory = Callable[..., nn.Conv2d]


def build_conv(name: str, *, eps: float = 1e-5) -> ConvFactory:
    """Return a factory ``conv(in_channels, out_channels, kernel_size, stride=1, padding=0)``.

    ``eps`` is WS's epsilon (implementations differ: 1e-5 official WS, 1e-6 timm, 1e-10 BiT).
    Convolutions carry no bias: every one is followed by a normalization layer.
    """
    if name == "plain":
        return partial(nn.Conv2d, bias=False)
    if name == "ws":
        return partial(StdConv2d, bias=False, eps=eps)
    raise ConfigError(f"unknown conv {name!r}; choose one of: {', '.join(CONVS)}")
