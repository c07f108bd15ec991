"""Train one model under the paper's protocol (Sec. 4.1): ``python -m gnrepro.train norm=gn batch=2``.

The run's result is the median top-1 validation error of the final 5 epochs, as reported in the
paper. Everything the run produces lands in one folder named by its settings (see
``gnrepro.config.run_name``): the resolved config, one JSON line of metrics per epoch, the
summary and the last checkpoint.
"""
from __future__ import annotations

import logging
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from gnrepro import runfiles
from gnrepro.build import build_model
from gnrepro.config import norm_tag, validate
from gnrepro.data import build_datasets, build_loaders
from gnrepro.engine import DivergedError, evaluate, train_one_epoch
from gnrepro.loggers import build_logger
from gnrepro.norms import ConfigError
from gnrepro.schedule import build_optimizer, build_scheduler

log = logging.getLogger("gnrepro")


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs this to be reproducible; harmless on CPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def final_error(val_errors: list[float], last: int) -> float:
    """The paper's reported number: the median error of the final ``last`` epochs."""
    return statistics.median(val_errors[-last:])


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Train and evaluate the model described by ``cfg``, writing outputs under ``run_dir``."""
    validate(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed, cfg.deterministic)
    device = resolve_device(cfg.device)

    splits = build_datasets(cfg.data)
    images_per_step = cfg.batch * cfg.workers
    train_loader, val_loader = build_loaders(splits, cfg.data, images_per_step, cfg.eval_batch, cfg.seed)
    model = build_model(cfg, splits.num_classes, splits.in_channels).to(device)
    optimizer, lr = build_optimizer(model, cfg.optim, cfg.batch)
    scheduler = build_scheduler(optimizer, cfg.optim, lr, len(train_loader), cfg.epochs)

    resolved = OmegaConf.to_container(cfg, resolve=True)
    runfiles.write_text(run_dir / runfiles.CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
    name = str(run_dir.relative_to(run_dir.parents[1]))
    logger = build_logger(cfg.logger, run_dir, name, resolved)
    log.info("run %s: %d train / %d val images, %d steps/epoch of %d images (%d workers x %d), lr %.4g, on %s",
             name, len(splits.train), len(splits.val), len(train_loader), images_per_step,
             cfg.workers, cfg.batch, lr, device)

    history: list[dict] = []
    start = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        lr_now = optimizer.param_groups[0]["lr"]
        row = {"epoch": epoch, "lr": lr_now}
        row.update(train_one_epoch(model, train_loader, optimizer, scheduler, device,
                                   epoch=epoch, progress=cfg.progress))
        row.update(evaluate(model, val_loader, device))
        row["images_per_s"] = row["train_images"] / row["train_seconds"]
        history.append(row)
        runfiles.write_jsonl(run_dir / runfiles.METRICS, history)
        logger.log({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
        if cfg.checkpoint:
            runfiles.save_checkpoint(run_dir / runfiles.CHECKPOINT, {
                "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "config": resolved,
            })
        log.info("epoch %d/%d  lr %.4g  train loss %.4f  train err %.2f%%  val err %.2f%%  %.0f img/s",
                 epoch, cfg.epochs, lr_now, row["train_loss"], row["train_error"], row["val_error"],
                 row["images_per_s"])
    wall = time.perf_counter() - start

    val_errors = [r["val_error"] for r in history]
    summary = {
        "status": "complete",
        "final_error": final_error(val_errors, cfg.final_epochs),
        "final_epochs": min(cfg.final_epochs, len(val_errors)),
        "val_errors": val_errors,
        "norm": cfg.norm.name,
        "norm_tag": norm_tag(cfg.norm, cfg.conv),
        "conv": cfg.conv.name,
        "groups": cfg.norm.get("groups"),
        "channels_per_group": cfg.norm.get("channels_per_group"),
        "batch": cfg.batch,
        "workers": cfg.workers,
        "lr": lr,
        "model": cfg.model.name,
        "data": cfg.data.name,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "wall_seconds": wall,
        "images_per_s": sum(r["train_images"] for r in history) / sum(r["train_seconds"] for r in history),
        "device": str(device),
    }
    runfiles.write_json(run_dir / runfiles.SUMMARY, summary)
    logger.finish()
    log.info("final error (median of last %d epochs): %.2f%%  wall %.0fs  -> %s",
             summary["final_epochs"], summary["final_error"], wall, run_dir)
    return summary


HYDRA_ONLY = {".hydra", "train.log"}  # what Hydra writes into a run folder before the run starts


def discard_if_unused(run_dir: Path) -> None:
    """Remove a run folder that holds only what Hydra put there, so a rejected config leaves nothing."""
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= HYDRA_ONLY:
        shutil.rmtree(run_dir, ignore_errors=True)
        cwd, parent = Path.cwd().resolve(), run_dir.resolve().parent
        while parent != cwd and cwd in parent.parents and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        return run(cfg, run_dir)["final_error"]
    except (ConfigError, DivergedError) as err:
        if isinstance(err, ConfigError):
            discard_if_unused(run_dir)
        if cfg.get("debug") is True:
            raise
        print(f"gnrepro: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
