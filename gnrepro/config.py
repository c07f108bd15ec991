"""Checks and names derived from a composed config: validation before any compute, and run names
made of the settings (never of job numbers), registered as the OmegaConf resolver ``run_name``."""
from __future__ import annotations

from omegaconf import OmegaConf

from gnrepro.batch_renorm import check_renorm
from gnrepro.convs import CONVS
from gnrepro.loggers import check_logger
from gnrepro.norms import NORMS, ConfigError, num_groups
from gnrepro.precise_bn import check_precise, uses_precise
from gnrepro.probe import check_probe
from gnrepro.resnet import norm_widths


def norm_tag(norm, conv) -> str:
    """Short label of the normalization choice, e.g. ``bn``, ``syncbn``, ``frozenbn``, ``gn32``, ``gn_c16``, ``gn32-ws``."""
    name = norm.get("name", "?")
    if name == "bn" and norm.get("sync"):
        tag = "syncbn"
    elif name == "bn" and norm.get("frozen"):
        tag = "frozenbn"
    elif name == "gn":
        cpg = norm.get("channels_per_group")
        tag = f"gn_c{cpg}" if cpg is not None else f"gn{norm.get('groups') or 32}"
    else:
        tag = name
    if uses_precise(norm):
        tag += "-precise"
    return tag + ("-ws" if conv.get("name") == "ws" else "")


def init_tag(init) -> str:
    """``_from-<name>`` for a run fine-tuned from released weights (a file: its name), else empty."""
    if init in (None, "", "None"):
        return ""
    name = str(init).rstrip("/").rsplit("/", 1)[-1]
    return "_from-" + "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)


def run_name(data: str, model: str, norm, conv, batch, workers, epochs, seed, init=None) -> str:
    """``<data>_<model>/<norm>_b<batch>x<workers>_e<epochs>_s<seed>[_from-<init>]``: one folder per
    setting; a fine-tuned run never shares a folder with a run from scratch."""
    return f"{data}_{model}/{norm_tag(norm, conv)}_b{batch}x{workers}_e{epochs}_s{seed}{init_tag(init)}"


if not OmegaConf.has_resolver("run_name"):
    OmegaConf.register_new_resolver("run_name", run_name)


def _check_int(value, key: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{key} must be {kind}, got {value!r}; set e.g. {key}={max(minimum, 2)}")
    return value


def validate(cfg) -> None:
    """Raise ConfigError naming the first bad value; runs before any data or model is built."""
    for key in ("batch", "workers", "epochs", "final_epochs", "eval_batch"):
        _check_int(cfg[key], key)
    _check_int(cfg.checkpoint_steps, "checkpoint_steps", minimum=0)
    check_logger(cfg.logger)
    if cfg.norm.name not in NORMS:
        raise ConfigError(f"unknown norm.name {cfg.norm.name!r}; choose one of: {', '.join(NORMS)}")
    if cfg.norm.name == "none" and cfg.model.get("arch", "resnet") != "vgg":
        raise ConfigError(f"norm=none (no normalization) is for VGG only; model={cfg.model.name} needs a norm, "
                          "e.g. norm=bn or norm=gn (or model=vgg16)")
    if cfg.norm.name == "brn":
        check_renorm(cfg.norm)
    check_precise(cfg.norm)
    check_probe(cfg.get("probe") or {})
    if cfg.norm.name == "gn":
        for width in norm_widths():  # G (or C/G) must fit every layer of the model
            num_groups(width, cfg.norm.groups, cfg.norm.channels_per_group)
    if cfg.conv.name not in CONVS:
        raise ConfigError(f"unknown conv.name {cfg.conv.name!r}; choose one of: {', '.join(CONVS)}")
    subset = cfg.data.get("subset")
    if subset is not None:
        _check_int(subset, "data.subset")
    for key in ("base_lr", "momentum", "weight_decay"):
        value = cfg.optim[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"optim.{key} must be a non-negative number, got {value!r}")


import gnrepro.weights.catalog  # noqa: E402,F401  (registers the ``released`` resolver the transfer preset uses)
