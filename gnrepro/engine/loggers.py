"""Optional experiment trackers. Metrics always go to the run folder; wandb is an extra, offline
unless asked otherwise, and checked up front so it can never block a run waiting on a network."""
from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path

from gnrepro.errors import ConfigError

log = logging.getLogger("gnrepro")


class NullLogger:
    def log(self, metrics: dict, step: int) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbLogger:
    def __init__(self, run, mode: str):
        self.run, self.mode = run, mode
        self.folder = Path(run.dir).parent  # wandb/offline-run-<time>-<id>/ (run.dir is its files/)
        if mode == "offline":
            log.info("W&B: logging offline to %s", self.folder)

    def log(self, metrics: dict, step: int) -> None:
        self.run.log(metrics, step=step)

    def finish(self) -> None:
        self.run.finish()
        # wandb is silent (settings below): without this line an offline user would not know that
        # anything was recorded, where, or that it needs an upload
        if self.mode == "offline":
            log.info("W&B: offline run saved in %s; upload it with: wandb sync %s", self.folder, self.folder)
        elif self.mode == "online":
            log.info("W&B: run at %s", self.run.url)


def _has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def check_logger(cfg) -> None:
    """Reject a logger setting that could not work, before any compute."""
    if cfg.name == "none":
        return
    if cfg.name != "wandb":
        raise ConfigError(f"unknown logger {cfg.name!r}; choose logger=none or logger=wandb")
    if cfg.mode not in ("offline", "online", "disabled"):
        raise ConfigError(f"logger.mode must be offline, online or disabled, got {cfg.mode!r}")
    if cfg.mode == "online" and not _has_wandb_credentials():
        raise ConfigError(
            "logger.mode=online needs W&B credentials: run `wandb login` or set WANDB_API_KEY, "
            "or keep logger.mode=offline and `wandb sync` later"
        )


def build_logger(cfg, run_dir: Path, name: str, config: dict):
    check_logger(cfg)
    if cfg.name == "none":
        return NullLogger()
    import wandb

    run = wandb.init(
        project=cfg.project, entity=cfg.entity, mode=cfg.mode, dir=str(run_dir), name=name,
        config=config, settings=wandb.Settings(init_timeout=cfg.init_timeout, silent=True),
    )
    return WandbLogger(run, cfg.mode)
