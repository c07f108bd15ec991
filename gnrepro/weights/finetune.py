"""Fine-tuning from released ImageNet weights (``init=<name|path|URL>``; paper Sec. 5 on transfer).

Every weight but the classifier comes from the file, strictly (gnrepro.weights.load); the
classifier keeps its fresh initialization for the new classes. ``norm.frozen=true`` (or
``norm=frozen_bn``) is the paper's BN* baseline: BN frozen into a per-channel affine with the
pretrained statistics, which only makes sense on top of pretrained weights.
"""
from __future__ import annotations

import logging

from gnrepro.errors import ConfigError
from gnrepro.weights.catalog import lookup
from gnrepro.weights.load import check_setting, load_released, resolve

log = logging.getLogger("gnrepro")


def check(cfg) -> None:
    """Mistakes in the fine-tuning settings, before any data or model is built."""
    init = cfg.get("init")
    if cfg.norm.get("frozen") and not init:
        raise ConfigError("norm.frozen=true keeps BN's statistics fixed at pretrained values; it needs "
                          "init=<released BN model>, e.g. init=tv-resnet50")
    if cfg.norm.get("frozen") and cfg.norm.get("sync"):
        raise ConfigError("norm.frozen=true and norm.sync=true exclude each other; drop norm.sync")
    if init and "std" not in cfg.data:  # the released models are ImageNet models (RGB, normalized by mean/std)
        raise ConfigError(f"init={init} is an ImageNet model for RGB images; data={cfg.data.name} has no RGB images "
                          "to fine-tune it on; use an RGB data set, e.g. data=pets")
    if init:
        entry = lookup(str(init))
        if entry is not None:
            check_setting(entry, cfg, "init")


def initialize(model, cfg) -> dict:
    """Load ``cfg.init`` into ``model`` (all but the classifier); returns what was loaded."""
    source = resolve(str(cfg.init), cfg.get("init_format", "auto"), cfg.conv.name, key="init")
    info = load_released(model, source, cfg, skip_classifier=True)
    log.info("initialized from %s (%s, %s); the classifier starts fresh", info["weights"], info["format"], info["file"])
    return info
