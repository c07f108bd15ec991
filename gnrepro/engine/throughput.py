"""Training images/s of one setting on this machine, timed rather than assumed.

``python -m gnrepro.plan --throughput measure`` (gnrepro/plan.py) and
``scripts/bench_input_pipeline.py`` time training steps here: the model built as the trainer builds
it (gnrepro/models/build.py), its optimizer, and the trainer's own step (``engine.train_one_epoch``) on
synthetic tensors already on the device, so the data pipeline is left out (the bench script times
that separately). A step is ``batch * workers`` images on one process, as in the trainer; small
per-worker batches cost more per image (the paper's Figure 1 sweep goes down to 2 images per worker).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import torch
from omegaconf import OmegaConf

from gnrepro.models.build import build_model
from gnrepro.layers.norm_registry import norm_tag
from gnrepro.data.digits import NUM_CLASSES as DIGITS_CLASSES
from gnrepro.engine.loop import train_one_epoch
from gnrepro.engine.execution import DEFAULTS as EXECUTION_DEFAULTS
from gnrepro.engine.execution import build_execution
from gnrepro.engine.schedule import build_optimizer

WARMUP_STEPS = 2  # not timed: allocator warm-up, cuDNN's algorithm choice, first-call overheads
TIMED_STEPS = 5

# Classes of each data set's classifier (the last layer's width; it barely changes a step's cost).
CLASSES = {"imagenet": 1000, "pets": 37, "imagenette": 10, "cifar10": 10, "cifar100": 100, "digits": DIGITS_CLASSES}


@dataclass(frozen=True)
class Setting:
    """What a training step's speed depends on; runs that differ only in seed, epochs, LR, ... share it."""

    key: str    # model, norm, conv, batch, workers and input, as one comparable string
    label: str  # the same, short, for the table
    shape: tuple[int, int, int, int]  # one step's input (batch * workers, channels, size, size)
    classes: int


def input_of(data_cfg) -> tuple[int, int]:
    """(channels, size) of the training crops the data config feeds the model."""
    if data_cfg.name == "digits":
        return 1, int(data_cfg.image_size)
    return 3, int(data_cfg.train_crop)


def setting_of(cfg) -> Setting:
    channels, size = input_of(cfg.data)
    classes = CLASSES[cfg.data.name]
    shape = (cfg.batch * cfg.workers, channels, size, size)
    parts = {name: OmegaConf.to_container(cfg[name], resolve=True) for name in ("model", "norm", "conv")}
    execution = {key: cfg.get(key, default) for key, default in EXECUTION_DEFAULTS.items()}
    key = json.dumps({**parts, **execution, "batch": cfg.batch, "workers": cfg.workers, "shape": shape,
                      "classes": classes}, sort_keys=True)
    unusual = " ".join(f"{k}={v}" for k, v in execution.items() if v != EXECUTION_DEFAULTS[k])
    label = (f"{cfg.model.name} {norm_tag(cfg.norm, cfg.conv)} batch={cfg.batch} workers={cfg.workers} "
             f"input={channels}x{size}x{size} classes={classes}" + (f" {unusual}" if unusual else ""))
    return Setting(key, label, shape, classes)


def time_steps(model, optimizer, images, targets, steps: int, warmup: int = WARMUP_STEPS, execution=None) -> float:
    """Images/s of ``steps`` training steps (after ``warmup`` untimed ones) of the trainer's loop on
    one batch held on the device, executed as ``execution`` says (default: fp32 eager)."""
    device = images.device
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

    def run(n: int) -> None:
        train_one_epoch(model, [(images, targets)] * n, optimizer, scheduler, device, epoch=0, progress=False,
                        execution=execution)

    if warmup:
        run(warmup)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    run(steps)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * len(images) / (time.perf_counter() - start)


def measure(cfg, device: torch.device, steps: int = TIMED_STEPS, warmup: int = WARMUP_STEPS, seed: int = 0) -> float:
    """Training images/s of the setting of ``cfg`` (a composed training config) on ``device``."""
    setting = setting_of(cfg)
    torch.manual_seed(seed)
    execution = build_execution(cfg, device)
    model = execution.place(build_model(cfg, setting.classes, setting.shape[1]))
    optimizer, _ = build_optimizer(model, cfg.optim, cfg.batch)
    for group in optimizer.param_groups:  # the same work per step, but random data cannot make the weights diverge
        group["lr"] = 0.0
    images = execution.images(torch.randn(setting.shape))
    targets = torch.randint(0, setting.classes, (setting.shape[0],), device=device)
    return time_steps(execution.compile(model), optimizer, images, targets, steps, warmup, execution)
