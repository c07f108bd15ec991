"""One epoch of training and one pass of evaluation, with nothing experiment-specific in them
(the shape of torchvision's classification reference)."""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from tqdm import tqdm


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class EpochMeter:
    """Running sums of one training epoch; part of a checkpoint so a resumed epoch reports the same."""

    loss_sum: float = 0.0
    wrong: int = 0
    seen: int = 0
    steps: int = 0
    seconds: float = 0.0

    def state_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> dict:
        return {"train_loss": self.loss_sum / self.seen, "train_error": 100.0 * self.wrong / self.seen,
                "train_images": self.seen, "train_seconds": self.seconds}


def train_one_epoch(
    model, loader, optimizer, scheduler, device, *, epoch: int, progress: bool = True,
    meter: Optional[EpochMeter] = None, on_step: Optional[Callable[[EpochMeter], None]] = None,
) -> dict:
    """Train on every batch of ``loader``, stepping ``scheduler`` after every optimizer step.

    ``meter`` carries the sums of an epoch resumed part-way (``loader`` then yields only the
    remaining batches); ``on_step(meter)`` runs after each step (checkpointing, preemption).
    A non-finite loss raises DivergedError before the optimizer step, so the weights stay finite.
    The progress bar shows only on a terminal (``progress=True``) and never when ``progress=False``.
    Returns the mean loss, the top-1 error (%) on the training batches, images seen and seconds.
    """
    model.train()
    meter = meter or EpochMeter()
    bar = tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=None if progress else True,
               dynamic_ncols=True, initial=meter.steps, total=meter.steps + len(loader))
    start = time.perf_counter() - meter.seconds
    for images, targets in bar:
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        logits = model(images)
        loss = F.cross_entropy(logits, targets)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise DivergedError(f"the training loss became {loss_value} at epoch {epoch}, step {meter.steps + 1}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        n = len(targets)
        meter.loss_sum += loss_value * n
        meter.wrong += (logits.argmax(1) != targets).sum().item()
        meter.seen += n
        meter.steps += 1
        meter.seconds = time.perf_counter() - start
        bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.4g}",
                        img_s=f"{meter.seen / meter.seconds:.0f}")
        if on_step is not None:
            on_step(meter)
    return meter.summary()


@torch.no_grad()
def evaluate(model, loader, device, *, top5: bool = False) -> dict:
    """Top-1 error (%) and mean cross-entropy over ``loader``, in eval mode; with ``top5`` also the
    top-5 error (%) as ``val_error_top5`` (a hit if the label is among the 5 highest logits, or
    among all of them when there are fewer than 5 classes)."""
    model.eval()
    loss_sum, wrong, wrong5, seen = 0.0, 0, 0, 0
    for images, targets in loader:
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        logits = model(images)
        loss_sum += F.cross_entropy(logits, targets, reduction="sum").item()
        wrong += (logits.argmax(1) != targets).sum().item()
        if top5:
            best = logits.topk(min(5, logits.shape[1]), dim=1).indices
            wrong5 += (best != targets[:, None]).all(1).sum().item()
        seen += len(targets)
    out = {"val_loss": loss_sum / seen, "val_error": 100.0 * wrong / seen}
    if top5:
        out["val_error_top5"] = 100.0 * wrong5 / seen
    return out
