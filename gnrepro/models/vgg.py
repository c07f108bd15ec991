"""VGG-16 built from a norm and a conv factory (the GN paper's Sec. 4.1, "VGG models": VGG-16 trained
from scratch without normalization, with BN and with GN, and its Figure 6).

The layout is torchvision's, index for index, so its ``vgg16`` (no norm) and ``vgg16_bn`` state
dicts load unchanged: ``features`` holds, per 3x3 conv, [conv, norm, ReLU] (or [conv, ReLU] with
``norm=None``), with a 2x2 max-pool after each of the 5 stages; then a 7x7 adaptive average pool
and ``classifier`` = Linear 4096, ReLU, Dropout, Linear 4096, ReLU, Dropout, Linear. The convs
keep torchvision's bias (redundant before a norm's beta, kept for the layout). Initialisation is
torchvision's: He fan-out for convs (bias 0), N(0, 0.01) for linear layers, norms at 1/0.

Layer names: ``convS_I`` is the I-th conv of stage S (``conv5_3`` is the last conv, the layer of
the paper's Figure 6); ``layer_aliases`` maps each name to its module path in ``features``.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from gnrepro.layers.convs import ConvFactory

NormFactory = Callable[[int], Optional[nn.Module]]
STAGES = {16: ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))}


def norm_widths(depth: int = 16) -> list[int]:
    """Every channel count a norm layer sees in this VGG."""
    return sorted({w for stage in STAGES[depth] for w in stage})


class VGG(nn.Module):
    """VGG with torchvision's module indices. ``small_input=True`` makes the max-pools round up
    (``ceil_mode``) so low-resolution proxies (10 px digits) survive the 5 halvings; no parameter
    changes. ``classifier_width`` / ``pool_size`` (torchvision: 4096 / 7) can shrink the classifier
    for CPU proxies."""

    def __init__(self, norm: NormFactory, conv: ConvFactory, num_classes: int = 1000, in_channels: int = 3,
                 depth: int = 16, small_input: bool = False, classifier_width: int = 4096, pool_size: int = 7,
                 dropout: float = 0.5):
        super().__init__()
        layers: list[nn.Module] = []
        self.layer_aliases: dict[str, str] = {}
        in_ch = in_channels
        for s, widths in enumerate(STAGES[depth], start=1):
            for i, width in enumerate(widths, start=1):
                self.layer_aliases[f"conv{s}_{i}"] = f"features.{len(layers)}"
                layers.append(conv(in_ch, width, 3, padding=1, bias=True))
                norm_layer = norm(width)
                if norm_layer is not None:
                    layers.append(norm_layer)
                layers.append(nn.ReLU(inplace=True))
                in_ch = width
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=small_input))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(pool_size)
        self.classifier = nn.Sequential(
            nn.Linear(in_ch * pool_size * pool_size, classifier_width), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(classifier_width, classifier_width), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(classifier_width, num_classes),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))
