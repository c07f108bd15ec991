"""Validation of a composed config before any compute. Importing it also registers the OmegaConf
resolvers the configs use: ``run_name`` (gnrepro.runs.identity) and ``released`` (gnrepro.weights.catalog)."""
from __future__ import annotations

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gnrepro.weights import finetune
from gnrepro.settings import schema
from gnrepro.errors import ConfigError
from gnrepro.engine.loggers import check_logger


def validate(cfg, choices: dict | None = None) -> list[str]:
    """Raise ConfigError naming the first bad value; runs before any data or model is built.

    ``cfg`` is the composed config (unresolved interpolations are resolved here), ``choices`` the
    chosen file of each group when known. Every key is checked against ``gnrepro.settings.schema``; returns
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


import gnrepro.runs.identity  # noqa: E402,F401  (registers the ``run_name`` resolver of the run folders)
import gnrepro.weights.catalog  # noqa: E402,F401  (registers the ``released`` resolver the transfer preset uses)
