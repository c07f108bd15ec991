"""Several processes, one per device, with the paper's per-worker BN semantics (Sec. 4.1, footnote 2).

``workers`` is the number of BN workers; with P processes each hosts ``workers / P`` of them,
interleaved in its share of a step (see ``gnrepro.layers.per_worker_bn``), so the same config gives
the same per-worker statistics on 1 process or on P. Gradients are averaged across processes by
DistributedDataParallel; BN statistics are never synchronized (unless ``norm.sync=true``).
Running statistics follow the one-process rule: before evaluation and checkpoints they are
averaged over processes, which by linearity of the momentum update equals the average over all
workers that the one-process layer keeps.

Processes are started by torchrun (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``), or by SLURM through
Hydra's submitit launcher, whose task variables are translated by submitit.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from gnrepro.errors import ConfigError


@dataclass(frozen=True)
class Processes:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_as_main() -> bool:
    """Whether this process is (or will be, before the process group exists) rank 0 of its launch:
    torchrun's ``RANK``, else SLURM's task id, else a single process."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))) == 0


def _export_slurm_env() -> None:
    """Under SLURM with several tasks and no torchrun, let submitit set the env:// variables."""
    if "RANK" not in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def init_processes(device_name: str) -> tuple[Processes, torch.device]:
    """Join the process group if launched as several processes; pick this process's device."""
    _export_slurm_env()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    procs = Processes(int(os.environ.get("RANK", "0")), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    if device_name not in ("auto", "cuda", "cpu") and procs.distributed:
        raise ConfigError(f"device={device_name!r} cannot be shared by {world_size} processes; use device=auto")
    if use_cuda:
        device = torch.device("cuda", procs.local_rank)
        torch.cuda.set_device(device)
    elif device_name == "auto":
        device = torch.device("cpu")
    else:
        device = torch.device(device_name)
    if procs.distributed and not dist.is_initialized():
        cuda = device.type == "cuda"
        dist.init_process_group(backend="nccl" if cuda else "gloo", device_id=device if cuda else None)
    return procs, device


def workers_per_process(workers: int, procs: Processes) -> int:
    if workers % procs.world_size:
        raise ConfigError(f"workers={workers} cannot be split over {procs.world_size} processes; "
                          f"use a multiple of {procs.world_size} (e.g. workers={procs.world_size * max(1, workers // procs.world_size)})")
    return workers // procs.world_size


def hosted_workers(workers: int, procs: Processes) -> range:
    """The ids of the BN workers this process hosts: one contiguous block per process."""
    per_process = workers_per_process(workers, procs)
    return range(procs.rank * per_process, (procs.rank + 1) * per_process)


def wrap(model: nn.Module, procs: Processes, device: torch.device) -> nn.Module:
    """DistributedDataParallel that leaves BN buffers alone during training (each worker keeps its
    own; they start equal, from the same seed or checkpoint, and are averaged by the one rule)."""
    if not procs.distributed:
        return model
    ddp = nn.parallel.DistributedDataParallel
    # torch 2.14 renamed the switch (broadcast_buffers is deprecated there); 2.11, a cluster's or the
    # lent GPU image's torch, knows only the old name
    no_sync = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters \
        else "broadcast_buffers"
    return ddp(model, device_ids=[device.index] if device.type == "cuda" else None, **{no_sync: False})


def average_bn_buffers(model: nn.Module, procs: Processes) -> None:
    """Make every process's BN running mean/var the average over processes (the one-process rule)."""
    if not procs.distributed:
        return
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            for buf in (m.running_mean, m.running_var):
                dist.all_reduce(buf, op=dist.ReduceOp.SUM)
                buf.div_(procs.world_size)


def _collective_device() -> torch.device:
    """NCCL reduces tensors on the GPU, gloo on the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def sum_over_processes(values: list[float], procs: Processes) -> list[float]:
    if not procs.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def any_process(flag: bool, procs: Processes) -> bool:
    """True on every process if ``flag`` is true on any (so all stop at the same step)."""
    if not procs.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather(obj, procs: Processes) -> list:
    if not procs.distributed:
        return [obj]
    out = [None] * procs.world_size
    dist.all_gather_object(out, obj)
    return out


def shutdown(procs: Processes) -> None:
    if procs.distributed and dist.is_initialized():
        dist.destroy_process_group()
