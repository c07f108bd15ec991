"""Turns the composed config into a model: the only place where config keys meet layers."""
from __future__ import annotations

from functools import partial

from torch import nn

from gnrepro.layers.convs import build_conv
from gnrepro.layers.norm_registry import NORM_KINDS, build_norm
from gnrepro.layers.precise_bn import PRECISE_KEYS
from gnrepro.models.resnet import ResNet
from gnrepro.models.vgg import VGG


def norm_factory(norm_cfg, workers: int):
    """``norm(num_channels)`` for the ``norm`` config group; batch-statistics norms (BN, BRN) get the
    per-worker split.
    Keys about evaluation statistics (precise BN) are not layer options."""
    options = {k: v for k, v in norm_cfg.items() if k not in ("name", *PRECISE_KEYS)}
    if NORM_KINDS[norm_cfg["name"]].batch_stats:
        options["workers"] = workers
    return partial(build_norm, norm_cfg["name"], **options)


def build_model(cfg, num_classes: int, in_channels: int, workers: int | None = None) -> nn.Module:
    """The configured ResNet or VGG (``model.arch``; ResNet when absent); ``workers`` is how many BN
    workers this process hosts (all of ``cfg.workers`` on one process)."""
    conv_options = {k: v for k, v in cfg.conv.items() if k != "name"}
    norm = norm_factory(cfg.norm, cfg.workers if workers is None else workers)
    conv = build_conv(cfg.conv.name, **conv_options)
    if cfg.model.get("arch", "resnet") == "vgg":
        return VGG(norm, conv, num_classes=num_classes, in_channels=in_channels, depth=cfg.model.depth,
                   small_input=cfg.model.small_input, classifier_width=cfg.model.classifier_width,
                   pool_size=cfg.model.pool_size, dropout=cfg.model.dropout)
    return ResNet(
        depth=cfg.model.depth,
        norm=norm,
        conv=conv,
        num_classes=num_classes,
        in_channels=in_channels,
        small_input=cfg.model.small_input,
    )
