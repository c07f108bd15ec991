"""One epoch of training and one pass of evaluation, with nothing experiment-specific in them
(the shape of torchvision's classification reference)."""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


def train_one_epoch(model, loader, optimizer, scheduler, device, *, epoch: int, progress: bool = True) -> dict:
    """Train for one pass over ``loader``, stepping ``scheduler`` every optimizer step.

    The progress bar shows only on a terminal (``progress=True``) and never when ``progress=False``.

    Returns the mean loss, the top-1 error (%) on the training batches, images seen and seconds.
    """
    model.train()
    loss_sum, wrong, seen, start = 0.0, 0, 0, time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=None if progress else True, dynamic_ncols=True)
    for images, targets in bar:
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        logits = model(images)
        loss = F.cross_entropy(logits, targets)
        if not math.isfinite(loss.item()):
            raise DivergedError(f"training loss became {loss.item()} at epoch {epoch}, step {seen // len(images)}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        n = len(targets)
        loss_sum += loss.item() * n
        wrong += (logits.argmax(1) != targets).sum().item()
        seen += n
        elapsed = time.perf_counter() - start
        bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{optimizer.param_groups[0]['lr']:.4g}",
                        img_s=f"{seen / elapsed:.0f}")
    seconds = time.perf_counter() - start
    return {"train_loss": loss_sum / seen, "train_error": 100.0 * wrong / seen,
            "train_images": seen, "train_seconds": seconds}


@torch.no_grad()
def evaluate(model, loader, device) -> dict:
    """Top-1 error (%) and mean cross-entropy over ``loader``, in eval mode."""
    model.eval()
    loss_sum, wrong, seen = 0.0, 0, 0
    for images, targets in loader:
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        logits = model(images)
        loss_sum += F.cross_entropy(logits, targets, reduction="sum").item()
        wrong += (logits.argmax(1) != targets).sum().item()
        seen += len(targets)
    return {"val_loss": loss_sum / seen, "val_error": 100.0 * wrong / seen}
