"""Which images each optimizer step sees, reproducible from (seed, epoch) alone.

A step takes ``batch * workers`` images; worker k of a step always gets the k-th slice of them,
whichever process hosts it. Because an epoch's order is a permutation drawn from (seed, epoch),
a run resumed mid-epoch replays exactly the remaining steps, with no sampler state to save.
"""
from __future__ import annotations

import torch
from torch.utils.data import Sampler


class StepBatchSampler(Sampler[list[int]]):
    """Yields, for every step of an epoch, the indices of this process's share of the step.

    ``share=(start, stop)`` selects positions within the step (all of it on one process; one
    contiguous block of workers per process under torch.distributed). The last partial step of
    an epoch is dropped, so every step splits evenly over the workers.
    """

    def __init__(self, num_samples: int, images_per_step: int, seed: int, share: tuple[int, int] | None = None):
        self.num_samples, self.images_per_step, self.seed = num_samples, images_per_step, seed
        self.share = share or (0, images_per_step)
        self.epoch, self.start_step = 1, 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    @property
    def steps_per_epoch(self) -> int:
        return self.num_samples // self.images_per_step

    def __len__(self) -> int:
        return self.steps_per_epoch - self.start_step

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.num_samples, generator=generator).tolist()
        lo, hi = self.share
        for step in range(self.start_step, self.steps_per_epoch):
            base = step * self.images_per_step
            yield order[base + lo: base + hi]
