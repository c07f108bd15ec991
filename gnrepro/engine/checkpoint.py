"""What a run saves to ``last.pt`` and takes back from it: the random streams, the sums of an epoch
checkpointed part-way, and the model/optimizer/schedule state (docs/runs.md).

A resumed run continues bitwise under ``deterministic=true``: the data order is a function of seed
and epoch, and every random stream a process draws from is saved with its position.
"""
from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from gnrepro import runfiles
from gnrepro.engine.distributed import Processes
from gnrepro.engine.loop import EpochMeter

log = logging.getLogger("gnrepro")


def all_finite(module: torch.nn.Module) -> bool:
    """Whether every floating-point weight and buffer is finite, checked before a checkpoint replaces
    the last good one. One host sync for the whole state: reading each tensor's flag synced once per
    tensor (about 320 on ResNet-50, issue 23)."""
    flags = [torch.isfinite(t).all() for t in module.state_dict().values() if t.is_floating_point()]
    if not flags:
        return True
    return bool(torch.stack([flag.to(flags[0].device) for flag in flags]).all())


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs this to be reproducible; harmless on CPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def rng_state() -> dict:
    """Every random stream a run draws from, as plain lists and numbers: loadable with
    ``torch.load(weights_only=True)`` and exchangeable between processes."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
        "torch": torch.get_rng_state().tolist(),
        "cuda": [s.tolist() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def restore_meter(saved: list[dict] | None, procs: Processes) -> EpochMeter | None:
    """This process's sums of an epoch checkpointed part-way (one entry per process that saved it).

    Resumed on another number of processes, the first process carries all the sums so far and the
    others only the position in the epoch, so the epoch's combined statistics stay right.
    """
    if saved is None:
        return None
    if len(saved) == procs.world_size:
        return EpochMeter(**saved[procs.rank])
    meters = [EpochMeter(**m) for m in saved]
    if not procs.is_main:
        return EpochMeter(steps=meters[0].steps, seconds=meters[0].seconds)
    return EpochMeter(loss_sum=sum(m.loss_sum for m in meters), wrong=sum(m.wrong for m in meters),
                      seen=sum(m.seen for m in meters), steps=meters[0].steps, seconds=meters[0].seconds)


def build(*, next_epoch: int, meters: Optional[list[dict]], epoch_lr: float, history: list[dict], model, optimizer,
          scheduler, scaler, rngs: list[dict], config: dict) -> dict:
    """The checkpoint dict: everything ``restore`` needs (``meters``/``rngs``: one entry per process)."""
    ckpt = {"next_epoch": next_epoch, "meter": meters, "epoch_lr": epoch_lr, "history": history,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "rng": rngs, "config": config}
    if scaler is not None:  # fp16's loss scale (absent from fp32/bf16 checkpoints)
        ckpt["scaler"] = scaler.state_dict()
    return ckpt


def restore(ckpt: dict, path: Path, procs: Processes, *, model, optimizer, scheduler,
            scaler) -> tuple[list[dict], int, float, Optional[EpochMeter]]:
    """Load ``ckpt`` (read from ``path``) into the run's objects and this process's random streams;
    returns ``(history, next_epoch, epoch_lr, partial-epoch meter or None)``."""
    try:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if scaler is not None and "scaler" in ckpt:
            scaler.load_state_dict(ckpt["scaler"])
    except (RuntimeError, KeyError, ValueError, TypeError) as err:  # another model's weights
        raise runfiles.DamagedFile(path, f"does not fit this model: {str(err).splitlines()[0][:100]}") from None
    meter = restore_meter(ckpt["meter"], procs)
    if len(ckpt["rng"]) == procs.world_size:
        set_rng_state(ckpt["rng"][procs.rank])
    else:
        log.warning("the checkpoint holds random states for %d processes, not %d: data augmentation "
                    "continues from fresh streams", len(ckpt["rng"]), procs.world_size)
    return ckpt["history"], ckpt["next_epoch"], ckpt["epoch_lr"], meter


WEIGHTS = "weights.pt"  # a completed run's final model, without optimizer state (keep_checkpoint=weights)


def save_final_weights(run_dir: Path, keep: str, model: torch.nn.Module, config: dict) -> None:
    """``keep_checkpoint=weights``: the final model as ``weights.pt`` ({"model", "config"}: what
    ``init=`` and ``gnrepro.evaluate weights=`` read, format gnrepro), written before summary.json so
    a complete run never lacks it."""
    if keep == "weights":
        runfiles.save_checkpoint(Path(run_dir) / WEIGHTS, {"model": model.state_dict(), "config": config})


def drop_resume_state(run_dir: Path, keep: str) -> None:
    """After summary.json: remove ``last.pt`` unless ``keep_checkpoint=last``. Why: ``last.pt`` is
    there to resume, and a complete run is never resumed; its optimizer state (SGD momentum, as large
    as the weights) only costs disk (a 30-run ResNet-50 sweep kept 5 GB of it). ``last`` keeps it, to
    re-score or continue a run (scripts/proxy_augmented_val.py reads it). A kill between summary.json
    and this leaves one file too many, never one too few."""
    if keep != "last":
        (Path(run_dir) / runfiles.CHECKPOINT).unlink(missing_ok=True)
