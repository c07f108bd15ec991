"""The paper's optimization protocol (Sec. 4.1; docs/PROTOCOL.md): SGD with momentum 0.9, weight decay
on every parameter (gamma and beta included), a learning rate scaled linearly with the images per
worker, divided by 10 at 30%, 60% and 90% of training, with a linear warm-up only when the scaled
rate exceeds the reference rate (as in the authors' code: ImageNet-ResNet-TensorFlow/imagenet-resnet-gn.py
of ppwwyyxx/GroupNorm-reproduce ramps the LR linearly from 0.1 to the scaled LR over the first 5 epochs,
step by step, when the scaled LR is above 0.1)."""
from __future__ import annotations

import bisect

import torch

from gnrepro.errors import ConfigError

REFERENCE_BATCH = 32  # images per worker at which the base LR applies


def scaled_lr(base_lr: float, batch: int) -> float:
    """Linear scaling rule: ``base_lr * batch / 32`` for ``batch`` images per worker."""
    return base_lr * batch / REFERENCE_BATCH


def lr_factor(step: int, steps_per_epoch: int, epochs: int, milestones, warmup_epochs: float,
              warmup_start: float | None = None) -> float:
    """Multiplier of the peak LR at optimizer step ``step`` (0-based).

    The LR is divided by 10 once ``m * epochs`` epochs are done, for each fraction ``m`` (epochs
    30/60/90 of 100). Warm-up, when asked for, ramps linearly over its ``W`` steps: from
    ``warmup_start`` (a fraction of the peak) at step 0 towards 1, ``start + (1 - start) * step / W``,
    as the authors' code does from the reference LR; with ``warmup_start=None`` from ``1/W`` to 1,
    ``(step + 1) / W`` (``optim.warmup=always``, the CPU proxy's warm-up from zero).
    """
    total = steps_per_epoch * epochs
    boundaries = sorted(round(m * total) for m in milestones)
    factor = 0.1 ** bisect.bisect_right(boundaries, step)
    warmup_steps = round(warmup_epochs * steps_per_epoch)
    if step < warmup_steps:
        if warmup_start is None:
            factor *= (step + 1) / warmup_steps
        else:
            factor *= warmup_start + (1.0 - warmup_start) * step / warmup_steps
    return factor


def build_optimizer(model: torch.nn.Module, cfg, batch: int):
    """SGD over all parameters with one weight decay, and its per-step LR schedule.

    ``optim.fused`` (auto | true | false) picks torch's fused SGD kernel: the same update rule in
    one pass over the parameters instead of several, which matters when a step is small and the
    optimizer's memory traffic dominates (CPU proxy: 24 -> 8 ms of a ~130 ms step). Results differ
    from the multi-kernel path only by float rounding.
    """
    lr = scaled_lr(cfg.base_lr, batch)
    fused = cfg.get("fused", "auto")
    if fused not in ("auto", True, False):
        raise ConfigError(f"optim.fused must be auto, true or false, got {fused!r}")
    params = list(model.parameters())
    if fused == "auto":
        fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    optimizer = torch.optim.SGD(
        params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=bool(fused) or None,
    )
    return optimizer, lr


def build_scheduler(optimizer, cfg, lr: float, steps_per_epoch: int, epochs: int):
    when = cfg.get("warmup", "auto")
    if when not in ("auto", "always", "never"):
        raise ConfigError(f"optim.warmup must be auto, always or never, got {when!r}")
    # auto: the authors' code warms up only when linear scaling takes the LR above the reference LR,
    # and then from the reference LR (base_lr), not from zero. always: from zero (the CPU proxy's).
    auto = when == "auto" and lr > cfg.base_lr
    warmup = cfg.warmup_epochs if when == "always" or auto else 0.0
    start = cfg.base_lr / lr if auto else None
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(step, steps_per_epoch, epochs, cfg.milestones, warmup, start),
    )
