"""Precise BN (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021, Sec. 3): evaluate with exact
population statistics instead of the EMA that training accumulated.

The GN paper attributes BN's small-batch failure to "inaccurate batch statistics estimation"
(Sec. 1, 4.1). Two things are inaccurate at small batches: the statistics each training step
normalizes with (train-time noise), and the EMA of them that evaluation uses (a population estimate
made of noisy, stale batches). ``norm.eval_stats=precise`` removes the second: before every
evaluation, the model runs in training mode (each worker normalizing its own ``batch`` images, as in
training) over K training batches, every BN layer's input is accumulated, and its population mean
and variance -- the exact mean of all images and positions, and E[x^2] - mean^2 over all of them,
not an EMA -- replace the running statistics for that evaluation. The EMA is put back afterwards,
so training itself is unchanged (BRN's r and d keep using the EMA) and checkpoints hold the EMA.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable

import torch
import torch.distributed as dist
from torch import nn


PRECISE_KEYS = ("eval_stats", "precise_batches")  # norm.* keys about evaluation, not layer options


def uses_precise(norm_cfg) -> bool:
    return norm_cfg.get("eval_stats", "running") == "precise"


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def population_statistics(model: nn.Module, batches: Iterable, device) -> dict:
    """``{bn_layer: (mean, var)}``: exact per-channel mean and (biased) variance of each BN layer's
    input over every image and position of ``batches``, with the model in training mode. Summed in
    float64 over all processes when torch.distributed is running. Leaves the model's parameters,
    buffers, mode and random streams as they were."""
    layers = batch_norms(model)
    saved = {m: ({k: b.clone() for k, b in m.named_buffers()}, m.momentum) for m in layers}
    sums: dict = {}

    def accumulate(module, args):
        x = args[0].detach().to(torch.float64)
        dims = [0, *range(2, x.dim())]
        s, sq, n = sums.get(module, (0.0, 0.0, 0))
        sums[module] = (s + x.sum(dims), sq + (x * x).sum(dims), n + x.numel() // x.shape[1])

    hooks = [m.register_forward_pre_hook(accumulate) for m in layers]
    was_training = model.training
    devices = [device] if torch.device(device).type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):  # dropout/augmentation draws must not shift training's
            for m in layers:
                m.momentum = 0.0  # the EMA stays put during the pass (BRN's r and d read it)
            model.train()
            for images, _ in batches:
                model(images.to(device, non_blocking=True))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
        for m, (buffers, momentum) in saved.items():
            m.momentum = momentum
            for k, b in m.named_buffers():
                b.copy_(buffers[k])
    if not sums:
        raise ValueError("precise BN got no batches to compute statistics from")
    out = {}
    for m, (s, sq, n) in sums.items():
        total = torch.cat([s, sq, torch.tensor([float(n)], dtype=torch.float64, device=s.device)])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
        c = s.numel()
        mean = total[:c] / total[-1]
        out[m] = (mean, total[c:2 * c] / total[-1] - mean * mean)
    return out


@contextmanager
def evaluation_statistics(model: nn.Module, norm_cfg, batches: Callable[[], Iterable], device):
    """Inside the block, BN layers hold the statistics ``norm.eval_stats`` asks for: the EMA as
    trained (``running``: nothing happens) or population statistics over ``batches()`` (``precise``),
    after which the EMA is restored."""
    if not uses_precise(norm_cfg):
        yield
        return
    stats = population_statistics(model, batches(), device)
    ema = {m: (m.running_mean.clone(), m.running_var.clone()) for m in stats}
    for m, (mean, var) in stats.items():
        m.running_mean.copy_(mean)
        m.running_var.copy_(var)
    try:
        yield
    finally:
        for m, (mean, var) in ema.items():
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
