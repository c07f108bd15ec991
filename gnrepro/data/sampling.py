"""Which images each optimizer step sees, reproducible from (seed, epoch) alone.

A step takes ``batch * workers`` images from the epoch's order, worker k the k-th run of
``batch`` of them, whichever process hosts it. A process's batch holds the workers it hosts in the
layout gnrepro.layers.per_worker_bn defines (``interleave``; ``worker_of``), the one PerWorkerBatchNorm2d
folds without copying.
Because an epoch's order is a permutation drawn from (seed, epoch), a run resumed mid-epoch replays
exactly the remaining steps, with no sampler state to save.
"""
from __future__ import annotations

import torch
from torch.utils.data import Sampler

from gnrepro.layers.per_worker_bn import interleave


class StepBatchSampler(Sampler[list[int]]):
    """Yields, for every step of an epoch, the indices of the images of the workers ``hosted`` here.

    ``hosted`` is a range of worker ids (all of them on one process; one contiguous block per
    process under torch.distributed). The last partial step of an epoch is dropped, so every step
    splits evenly over the workers.
    """

    def __init__(self, num_samples: int, batch: int, workers: int, seed: int, hosted: range | None = None):
        self.num_samples, self.batch, self.workers, self.seed = num_samples, batch, workers, seed
        self.hosted = hosted if hosted is not None else range(workers)
        self.epoch, self.start_step = 1, 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    @property
    def images_per_step(self) -> int:
        return self.batch * self.workers

    @property
    def steps_per_epoch(self) -> int:
        return self.num_samples // self.images_per_step

    def __len__(self) -> int:
        return self.steps_per_epoch - self.start_step

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.num_samples, generator=generator).tolist()
        for step in range(self.start_step, self.steps_per_epoch):
            base = step * self.images_per_step
            yield interleave([order[base + k * self.batch: base + (k + 1) * self.batch] for k in self.hosted])
