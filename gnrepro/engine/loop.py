"""One epoch of training and one pass of evaluation, with nothing experiment-specific in them
(the shape of torchvision's classification reference).

A training step never waits for the device: the loss and error sums stay on the device and are read
(one host-device sync) only at read points (every ``log_every`` steps, at checkpoints and at the
epoch end), so the host can queue the next steps while the device works. A non-finite loss is
recorded on the device and raises DivergedError at the next read point.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from tqdm import tqdm

from gnrepro.engine.execution import Execution

log = logging.getLogger("gnrepro")


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


def sum_dtype(device: torch.device) -> torch.dtype:
    """The dtype of on-device sums: float64 where the device has it (MPS does not)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _no_other_process(flag: bool) -> bool:
    return flag


class EpochSums:
    """An epoch's sums kept on the device while ``meter`` holds the host's copy.

    ``meter.steps``, ``seen`` and ``seconds`` are known on the host and always current;
    ``loss_sum`` and ``wrong`` are current only after ``read()``. The device accumulators are never
    reset within an epoch, so the sums read at any point (a checkpoint) are the true ones, added in
    the same order as in an uninterrupted run (float64, where the device has it).
    ``any_process(flag)`` makes a flag true on every process if it is on any (all stop together).
    """

    def __init__(self, meter: EpochMeter, device: torch.device, epoch: int,
                 any_process: Callable[[bool], bool] = _no_other_process):
        self.meter, self.epoch, self.any_process = meter, epoch, any_process
        self.loss_sum = torch.tensor(meter.loss_sum, dtype=sum_dtype(device), device=device)
        self.wrong = torch.tensor(meter.wrong, dtype=torch.int64, device=device)
        self.first_bad = torch.tensor(-1, dtype=torch.int64, device=device)  # the step of the first non-finite loss
        self.bad_loss = torch.tensor(0.0, dtype=torch.float32, device=device)

    def add(self, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, seconds: float) -> torch.Tensor:
        """Account one step (no sync); returns the device flag ``loss is not finite``."""
        loss = loss.detach().float()
        bad = ~torch.isfinite(loss)
        step = self.meter.steps + 1
        newly = bad & (self.first_bad < 0)
        self.first_bad = torch.where(newly, step, self.first_bad)
        self.bad_loss = torch.where(newly, loss, self.bad_loss)
        self.loss_sum += loss.to(self.loss_sum.dtype) * len(targets)
        self.wrong += (logits.argmax(1) != targets).sum()
        self.meter.seen += len(targets)
        self.meter.steps = step
        self.meter.seconds = seconds
        return bad

    def read(self, seconds: Optional[float] = None) -> EpochMeter:
        """Copy the device sums into ``meter`` (one sync) and return it; DivergedError if a loss
        was non-finite on any process since the epoch began."""
        loss_sum, wrong, first_bad, bad_loss = torch.stack(
            [self.loss_sum.double(), self.wrong.double(), self.first_bad.double(), self.bad_loss.double()]).tolist()
        if seconds is not None:  # the time after the device caught up
            self.meter.seconds = seconds
        if self.any_process(first_bad >= 0):
            where = f"at epoch {self.epoch}, step {int(first_bad)}" if first_bad >= 0 else \
                f"on another process at epoch {self.epoch}, by step {self.meter.steps}"
            raise DivergedError(f"the training loss became {bad_loss if first_bad >= 0 else 'non-finite'} {where}")
        self.meter.loss_sum, self.meter.wrong = loss_sum, int(wrong)
        return self.meter


def _optimizer_step(optimizer, execution: Execution, loss: torch.Tensor, bad: torch.Tensor) -> None:
    """Backward and update. The update is skipped on the device when the loss is not finite: fp16's
    GradScaler skips on non-finite gradients (a non-finite loss has them); the fused SGD kernel
    takes the same ``found_inf`` flag otherwise. The unfused path applies the update anyway (the
    run stops at the next read point and a checkpoint never holds non-finite weights)."""
    scaler = execution.scaler
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return
    loss.backward()
    if optimizer.defaults.get("fused"):
        optimizer.found_inf = bad.float()
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
    else:
        optimizer.step()


class ProgressLines:
    """A progress line for logs that are not a terminal (SLURM, nohup: no progress bar there, and an
    ImageNet epoch is hours of silence otherwise): at the first read point (every ``log_every`` steps)
    after ``seconds`` since the last line, one ``log.info`` line (console and train.log) with the
    step, the loss since the last read, LR, images/s and the training time left (evaluation not
    counted). ``seconds=0``: at every read point."""

    def __init__(self, seconds: float, epochs: int, steps_per_epoch: int, clock: Callable[[], float] = time.monotonic):
        self.seconds, self.epochs, self.steps_per_epoch, self.clock = seconds, epochs, steps_per_epoch, clock
        self.last = clock()

    def maybe(self, epoch: int, meter: EpochMeter, total: int, loss: float, lr: float) -> None:
        now = self.clock()
        if now - self.last < self.seconds or not meter.seconds:
            return
        self.last = now
        rate = meter.steps / meter.seconds  # this epoch's steps per second so far
        left = (total - meter.steps) + (self.epochs - epoch) * self.steps_per_epoch
        log.info("epoch %d/%d  step %d/%d  loss %.4f  lr %.4g  %.1f img/s  ETA %s (training)", epoch, self.epochs,
                 meter.steps, total, loss, lr, meter.seen / meter.seconds, _duration(left / rate if rate else 0))


def _duration(seconds: float) -> str:
    """``1h02m`` / ``3m05s`` / ``42s``."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def train_one_epoch(
    model, loader, optimizer, scheduler, device, *, epoch: int, progress: bool = True,
    meter: Optional[EpochMeter] = None, on_step: Optional[Callable[[EpochSums], None]] = None,
    log_every: int = 50, execution: Optional[Execution] = None,
    any_process: Callable[[bool], bool] = _no_other_process,
    lines: Optional[ProgressLines] = None,
) -> EpochMeter:
    """Train on every batch of ``loader``, stepping ``scheduler`` after every optimizer step.

    ``meter`` carries the sums of an epoch resumed part-way (``loader`` then yields only the
    remaining batches); ``on_step(sums)`` runs after each step (checkpointing, preemption) and
    calls ``sums.read()`` when it needs the sums. The sums are read every ``log_every`` steps (the
    progress bar) and at the end; a non-finite loss raises DivergedError there, its update skipped.
    ``execution``: precision, memory layout (``model`` is already prepared by it); fp32 by default.
    The progress bar shows only on a terminal (``progress=True``) and never when ``progress=False``;
    ``lines`` (off a terminal) logs a progress line at read points instead (``ProgressLines``).
    Returns the epoch's sums (``EpochMeter``; ``.summary()`` gives the means).
    """
    execution = execution or Execution(torch.device(device))
    model.train()
    sums = EpochSums(meter or EpochMeter(), execution.device, epoch, any_process)
    meter = sums.meter
    bar = tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=None if progress else True,
               dynamic_ncols=True, initial=meter.steps, total=meter.steps + len(loader))
    start = time.perf_counter() - meter.seconds
    last = (meter.loss_sum, meter.seen)
    for images, targets in bar:
        images = execution.images(images)
        targets = targets.to(execution.device, non_blocking=True)
        with execution.autocast():
            logits = model(images)
            loss = F.cross_entropy(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        bad = sums.add(loss, logits, targets, time.perf_counter() - start)
        _optimizer_step(optimizer, execution, loss, bad)
        scheduler.step()
        if meter.steps % log_every == 0:
            sums.read(time.perf_counter() - start)
            window = (meter.loss_sum - last[0]) / max(1, meter.seen - last[1])
            last = (meter.loss_sum, meter.seen)
            bar.set_postfix(loss=f"{window:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.4g}",
                            img_s=f"{meter.seen / meter.seconds:.0f}")
            if lines is not None:
                lines.maybe(epoch, meter, bar.total, window, optimizer.param_groups[0]["lr"])
        if on_step is not None:
            on_step(sums)
    return sums.read(time.perf_counter() - start)


def evaluation_sums(model, loader, device, *, top5: bool = False) -> dict:
    """Summed cross-entropy, top-1 (and top-5) mistakes and images over ``loader``, in eval mode;
    kept on the device and read once at the end."""
    model.eval()
    device = torch.device(device)
    real = sum_dtype(device)
    loss_sum = torch.zeros((), dtype=real, device=device)
    wrong = torch.zeros((), dtype=torch.int64, device=device)
    wrong5 = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    with torch.no_grad():
        for images, targets in loader:
            images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            logits = model(images)
            loss_sum += F.cross_entropy(logits.float(), targets, reduction="sum").to(real)
            wrong += (logits.argmax(1) != targets).sum()
            if top5:  # a hit if the label is among the 5 highest logits (all of them with fewer classes)
                best = logits.topk(min(5, logits.shape[1]), dim=1).indices
                wrong5 += (best != targets[:, None]).all(1).sum()
            seen += len(targets)
    loss_sum, wrong, wrong5 = torch.stack([loss_sum.double(), wrong.double(), wrong5.double()]).tolist()
    out = {"loss_sum": loss_sum, "wrong": int(wrong), "seen": seen}
    if top5:
        out["wrong5"] = int(wrong5)
    return out


def evaluation_means(sums: dict) -> dict:
    """``val_loss`` and the top-1 (top-5) error in % from ``evaluation_sums``'s sums."""
    out = {"val_loss": sums["loss_sum"] / sums["seen"], "val_error": 100.0 * sums["wrong"] / sums["seen"]}
    if "wrong5" in sums:
        out["val_error_top5"] = 100.0 * sums["wrong5"] / sums["seen"]
    return out


def evaluate(model, loader, device, *, top5: bool = False) -> dict:
    """Top-1 error (%) and mean cross-entropy over ``loader``, in eval mode; with ``top5`` also the
    top-5 error (%) as ``val_error_top5`` (a hit if the label is among the 5 highest logits, or
    among all of them when there are fewer than 5 classes)."""
    return evaluation_means(evaluation_sums(model, loader, device, top5=top5))
