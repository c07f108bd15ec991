"""Checks and names derived from a composed config: validation before any compute, and run names
made of the settings (never of job numbers), registered as the OmegaConf resolver ``run_name``."""
from __future__ import annotations

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gnrepro import finetune, schema
from gnrepro.errors import ConfigError
from gnrepro.loggers import check_logger
from gnrepro.norms import DEFAULT_GROUPS
from gnrepro.precise_bn import uses_precise


def norm_tag(norm, conv) -> str:
    """Short label of the normalization choice, e.g. ``bn``, ``syncbn``, ``frozenbn``, ``gn32``, ``gn_c16``, ``gn32-ws``."""
    name = norm.get("name", "?")
    if name == "bn" and norm.get("sync"):
        tag = "syncbn"
    elif name == "bn" and norm.get("frozen"):
        tag = "frozenbn"
    elif name == "gn":
        cpg = norm.get("channels_per_group")
        tag = f"gn_c{cpg}" if cpg is not None else f"gn{norm.get('groups') or DEFAULT_GROUPS}"
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


def validate(cfg, choices: dict | None = None) -> list[str]:
    """Raise ConfigError naming the first bad value; runs before any data or model is built.

    ``cfg`` is the composed config (unresolved interpolations are resolved here), ``choices`` the
    chosen file of each group when known. Every key is checked against ``gnrepro.schema``; returns
    one note per legal but unusual value.
    """
    try:
        values = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False) if OmegaConf.is_config(cfg) else cfg
    except OmegaConfBaseException as err:  # e.g. an interpolation to a key that does not exist
        raise ConfigError(f"the config cannot be resolved: {str(err).splitlines()[0]}") from None
    notes = schema.check(values, choices)
    check_logger(OmegaConf.create(values["logger"]))
    finetune.check(OmegaConf.create(values))  # init= and frozen BN, before any folder exists
    return notes


import gnrepro.weights.catalog  # noqa: E402,F401  (registers the ``released`` resolver the transfer preset uses)
