"""Batch Renormalization (Ioffe, NeurIPS 2017) with per-worker statistics, as compared in the Group
Normalization paper (Sec. 4.1, "Comparison with Batch Renorm": ResNet-50 at 4 images/worker,
r_max = 1.5, d_max = 0.5, 26.3% error against BN's 27.3% and GN's 24.2%).

BRN normalizes with the batch statistics like BN, then corrects them towards the running (population)
statistics with a per-channel scale r and shift d, both clipped and treated as constants in the
backward pass (Ioffe 2017, Algorithm 1)::

    sigma_B = sqrt(var_B + eps),  sigma = sqrt(running_var + eps)
    r = stop_grad(clip(sigma_B / sigma, 1/r_max, r_max))
    d = stop_grad(clip((mu_B - running_mean) / sigma, -d_max, d_max))
    y = gamma * ((x - mu_B) / sigma_B * r + d) + beta

so r_max = 1, d_max = 0 is exactly BN. Statistics are per worker (the same fold as
``gnrepro.layers.per_worker_bn.PerWorkerBatchNorm2d``; each worker's r and d use its own batch statistics against
the shared running statistics), and the running statistics follow BN's rule unchanged.

Warm-up: the BRN paper trains with r_max = 1, d_max = 0 (plain BN) for its first 5k steps, then
relaxes the limits gradually. The GN paper states only "r_max = 1.5 and d_max = 0.5" and no such
schedule, so the default here is constant limits from the first step; ``relax_start`` /
``relax_steps`` give the BRN paper's kind of schedule (one linear ramp for both limits).
"""
from __future__ import annotations

import torch
from torch import nn

from gnrepro.layers.norms import EPS
from gnrepro.layers.per_worker_bn import PerWorkerBatchNorm2d, per_worker_var_mean

R_MAX, D_MAX = 1.5, 0.5  # the GN paper's setting for ResNet-50 (Sec. 4.1)


class PerWorkerBatchRenorm2d(PerWorkerBatchNorm2d):
    """Batch Renorm over each worker's images; evaluation uses the running statistics, as BN.

    ``relax_start``: training steps at r_max = 1, d_max = 0 (BN) before the limits grow;
    ``relax_steps``: steps over which they then grow linearly to ``r_max`` / ``d_max`` (0: at once).
    The step count is ``num_batches_tracked``, so the schedule resumes with a checkpoint.
    """

    def __init__(self, num_features: int, workers: int = 1, eps: float = EPS, momentum: float = 0.1, *,
                 r_max: float = R_MAX, d_max: float = D_MAX, relax_start: int = 0, relax_steps: int = 0):
        super().__init__(num_features, workers=workers, eps=eps, momentum=momentum)
        self.r_max, self.d_max = float(r_max), float(d_max)
        self.relax_start, self.relax_steps = relax_start, relax_steps

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", r_max={self.r_max}, d_max={self.d_max}"
                + (f", relax_start={self.relax_start}, relax_steps={self.relax_steps}"
                   if self.relax_start or self.relax_steps else ""))

    def limits(self) -> tuple[float, float]:
        """(r_max, d_max) for the step about to run (constant limits: without reading the step count)."""
        if not (self.relax_start or self.relax_steps):
            return self.r_max, self.d_max
        step = int(self.num_batches_tracked) + 1
        if self.relax_steps:
            frac = min(max((step - self.relax_start) / self.relax_steps, 0.0), 1.0)
        else:
            frac = 1.0 if step > self.relax_start else 0.0
        return 1.0 + frac * (self.r_max - 1.0), frac * self.d_max

    def limit_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``limits()`` as 0-d tensors on the buffers' device, computed without reading it."""
        step = self.num_batches_tracked.to(self.running_var.dtype) + 1
        if self.relax_steps:
            frac = ((step - self.relax_start) / self.relax_steps).clamp(0.0, 1.0)
        else:
            frac = (step > self.relax_start).to(step.dtype)
        return 1.0 + frac * (self.r_max - 1.0), frac * self.d_max

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return nn.BatchNorm2d.forward(self, x)
        w = self.workers
        weight, bias = self.weight.repeat(w), self.bias.repeat(w)
        # Constant limits (the GN paper's) are Python numbers; a schedule's are tensors computed on the
        # device from num_batches_tracked, so a step never reads the device (no sync, no graph break).
        r_max, d_max = self.limits() if not (self.relax_start or self.relax_steps) else self.limit_tensors()
        if isinstance(r_max, torch.Tensor) or r_max != 1.0 or d_max != 0.0:
            # gamma * (x_hat * r + d) + beta = x_hat * (gamma * r) + (beta + gamma * d), with r, d constants
            with torch.no_grad():  # each worker's statistics on the split view: no copy in any layout
                var_b, mu_b = (s.flatten() for s in per_worker_var_mean(x, w))
                sigma = (self.running_var + self.eps).sqrt().repeat(w)
                r = torch.clamp((var_b + self.eps).sqrt() / sigma, 1.0 / r_max, r_max)
                d = torch.clamp((mu_b - self.running_mean.repeat(w)) / sigma, -d_max, d_max)
            weight, bias = weight * r, bias + weight * d
        return self.normalize(x, weight, bias)
