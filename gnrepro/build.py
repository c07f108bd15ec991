"""Turns the composed config into a model: the only place where config keys meet layers."""
from __future__ import annotations

from functools import partial

from gnrepro.convs import build_conv
from gnrepro.norms import build_norm
from gnrepro.resnet import ResNet


def norm_factory(norm_cfg, workers: int):
    """``norm(num_channels)`` for the ``norm`` config group; BN gets the per-worker split."""
    options = {k: v for k, v in norm_cfg.items() if k != "name"}
    if norm_cfg["name"] == "bn":
        options["workers"] = workers
    return partial(build_norm, norm_cfg["name"], **options)


def build_model(cfg, num_classes: int, in_channels: int, workers: int | None = None) -> ResNet:
    """The configured ResNet; ``workers`` is how many BN workers this process hosts (all of
    ``cfg.workers`` on one process)."""
    conv_options = {k: v for k, v in cfg.conv.items() if k != "name"}
    return ResNet(
        depth=cfg.model.depth,
        norm=norm_factory(cfg.norm, cfg.workers if workers is None else workers),
        conv=build_conv(cfg.conv.name, **conv_options),
        num_classes=num_classes,
        in_channels=in_channels,
        small_input=cfg.model.small_input,
    )
