"""ResNet-50/101 built from a norm and a conv factory (the backbone of the paper's Sec. 4.1).

The layout is torchvision's (= fb.resnet.torch, the paper's): the stride of a bottleneck sits on
its 3x3 convolution, and the projection shortcut is a 1x1 conv + norm. Initialisation follows
docs/PROTOCOL.md: He (MSRA) fan-out for convolutions, gamma = 1 / beta = 0 for every norm except the
last norm of each residual block, whose gamma starts at 0 so every block starts as the identity.

No layer reads global config: the caller passes ``norm(num_channels)`` and
``conv(in, out, kernel_size, stride=, padding=)`` factories.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from gnrepro.layers.convs import ConvFactory
from gnrepro.errors import ConfigError

NormFactory = Callable[[int], nn.Module]
# Bottleneck blocks per stage. 50 and 101 are the paper's; 26 (timm's resnet26 layout) and 14 (one
# block per stage) keep the paper's widths at a half / a quarter of its blocks, for the CPU proxy only
# (configs/model/resnet26.yaml, resnet14.yaml).
DEPTHS = {14: (1, 1, 1, 1), 26: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
WIDTHS = (64, 128, 256, 512)  # bottleneck widths of the four stages; outputs are 4x these
EXPANSION = 4


def norm_widths() -> list[int]:
    """Every channel count a norm layer sees in these ResNets (stem, bottleneck widths, outputs)."""
    return sorted({64, *WIDTHS, *(w * EXPANSION for w in WIDTHS)})


class Bottleneck(nn.Module):
    def __init__(self, in_ch: int, width: int, stride: int, norm: NormFactory, conv: ConvFactory):
        super().__init__()
        out_ch = width * EXPANSION
        self.conv1, self.bn1 = conv(in_ch, width, 1), norm(width)
        self.conv2, self.bn2 = conv(width, width, 3, stride=stride, padding=1), norm(width)
        self.conv3, self.bn3 = conv(width, out_ch, 1), norm(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(conv(in_ch, out_ch, 1, stride=stride), norm(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Bottleneck ResNet. ``small_input=True`` swaps the 7x7/2 conv + max-pool stem for one 3x3/1
    conv, for low-resolution proxies (digits, CIFAR), keeping every residual stage unchanged."""

    def __init__(
        self,
        depth: int,
        norm: NormFactory,
        conv: ConvFactory,
        num_classes: int = 1000,
        in_channels: int = 3,
        small_input: bool = False,
    ):
        super().__init__()
        if depth not in DEPTHS:
            raise ConfigError(f"unknown ResNet depth {depth!r}; choose one of: {sorted(DEPTHS)}")
        if small_input:
            self.conv1 = conv(in_channels, 64, 3, stride=1, padding=1)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = conv(in_channels, 64, 7, stride=2, padding=3)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = norm(64)
        self.relu = nn.ReLU(inplace=True)
        in_ch, stages = 64, []
        for i, (blocks, width) in enumerate(zip(DEPTHS[depth], WIDTHS)):
            layers = []
            for b in range(blocks):
                layers.append(Bottleneck(in_ch, width, 2 if (b == 0 and i > 0) else 1, norm, conv))
                in_ch = width * EXPANSION
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # Norm layers are built with gamma = 1, beta = 0; only convs and the block-final gammas change.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)  # each residual block starts as the identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))
