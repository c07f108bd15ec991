"""Training images/s of one model under each execution setting, side by side in one run.

For each norm (bn, gn, gn_ws) and each combination of precision (fp32 | bf16 | fp16), memory
layout (nchw | channels_last) and mode (eager | compiled), time full training steps (forward,
loss, backward, fused SGD, through ``gnrepro.engine.loop.train_one_epoch`` itself: the sync-free loop)
on synthetic device tensors, and print images/s with the ratio to the fp32 / nchw / eager row of
the same norm measured in the same run. A last row times the input side alone: uint8 batches
copied to the device and normalized there; ``--loader`` adds the real train loader of the
training-config overrides (``scripts/bench_input_pipeline.py``'s measurement).

    python scripts/bench_throughput.py --device cuda                       # ResNet-50, 224 px, batch 64
    python scripts/bench_throughput.py --device cuda --precisions fp32 bf16 fp16 --batch 128
    python scripts/bench_throughput.py --device cpu --model resnet26 --size 32 --batch 4 --steps 3

On CUDA each timed window is bracketed by ``torch.cuda.synchronize()`` after ``--warmup`` steps
(which also absorb torch.compile's compilation and cuDNN's autotuning).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import gnrepro.settings.validate  # noqa: E402,F401  (registers the run_name resolver)
from bench_input_pipeline import _fmt, build_train_loader, compose_train, pipeline_rate  # noqa: E402
from gnrepro.models.build import build_model  # noqa: E402
from gnrepro.data.base import normalize_uint8  # noqa: E402
from gnrepro.engine.execution import pick_device  # noqa: E402
from gnrepro.engine.execution import PRECISIONS, build_execution, resolve_cudnn_benchmark  # noqa: E402
from gnrepro.engine.throughput import time_steps  # noqa: E402

MODELS = ("resnet26", "resnet50", "resnet101")
NORMS = ("bn", "gn", "gn_ws")
CLASSES = 1000


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_rate(cfg, device, precision: str, channels_last: bool, compiled: bool, batch: int, size: int,
              steps: int, warmup: int) -> float:
    """Images/s of ``steps`` training steps after ``warmup`` steps, one fresh model per setting,
    executed as a run with these settings would be (``gnrepro.engine.execution.build_execution``)."""
    torch.manual_seed(0)
    core = build_model(cfg, CLASSES, 3, workers=1)
    execution = build_execution(OmegaConf.merge(cfg, {"precision": precision, "channels_last": channels_last,
                                                      "compile": "default" if compiled else "off"}), device)
    execution.place(core)
    optimizer = torch.optim.SGD(core.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4, fused=True)
    images = execution.images(torch.randn(batch, 3, size, size))
    targets = torch.randint(0, CLASSES, (batch,), device=device)
    return time_steps(execution.compile(core), optimizer, images, targets, steps, warmup, execution)


def input_rate(device, batch: int, size: int, steps: int) -> float:
    """Images/s of the input side alone: uint8 batches (as decoded) to the device, then float and
    normalized there as ``data.loader=pil_uint8`` does (pinned host memory on CUDA)."""
    host = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    if device.type == "cuda":
        host = host.pin_memory()
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)
    normalize_uint8(host.to(device), mean, std)  # untimed: first-call overheads
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        normalize_uint8(host.to(device, non_blocking=True), mean, std)
    sync(device)
    return steps * batch / (time.perf_counter() - start)


def loader_rate(overrides: list[str], steps: int) -> tuple[float, str]:
    """The real train loader of ``overrides`` alone (bench_input_pipeline's measurement)."""
    loader, cfg = build_train_loader(overrides)
    rate, _ = pipeline_rate(loader, steps)
    return rate, f"data={cfg.data.name} batch={cfg.batch} num_workers={cfg.data.get('num_workers', 0)}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50", choices=MODELS)
    parser.add_argument("--norms", nargs="+", default=list(NORMS), choices=NORMS)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=list(PRECISIONS))
    parser.add_argument("--layouts", nargs="+", default=["nchw", "channels_last"], choices=["nchw", "channels_last"])
    parser.add_argument("--modes", nargs="+", default=["eager", "compiled"], choices=["eager", "compiled"])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--batch", type=int, default=None, help="images per step (default 64 on CUDA, 4 on CPU)")
    parser.add_argument("--size", type=int, default=None, help="image side (default 224 on CUDA, 32 on CPU)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per setting (default 50 CUDA, 3 CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 10 CUDA, 1 CPU)")
    parser.add_argument("--loader", nargs="*", default=None, metavar="OVERRIDE",
                        help="also time the real train loader of these training-config overrides "
                             "(e.g. data=imagenet data.root=/data/imagenet batch=64)")
    args = parser.parse_args(argv)

    device = pick_device(args.device)
    cuda = device.type == "cuda"
    batch, size = args.batch or (64 if cuda else 4), args.size or (224 if cuda else 32)
    steps, warmup = args.steps or (50 if cuda else 3), args.warmup if args.warmup is not None else (10 if cuda else 1)
    torch.backends.cudnn.benchmark = resolve_cudnn_benchmark("auto", deterministic=False)
    small_input = "true" if size < 64 else "false"  # ImageNet's stem (7x7/2 + max-pool) only on large images
    where = torch.cuda.get_device_name(device) if cuda else f"cpu, {torch.get_num_threads()} threads"
    print(f"{args.model}  batch {batch}  size {size}  {steps} timed steps after {warmup}  on {device} ({where})  "
          f"torch {torch.__version__}")
    print(f"{'norm':<6} {'precision':<9} {'layout':<13} {'mode':<8} {'images/s':>10} {'ratio':>7}")
    for norm in args.norms:
        cfg = compose_train([f"model={args.model}", f"norm={norm}", "workers=1", f"model.small_input={small_input}"])
        baseline = None
        for precision in args.precisions:
            for layout in args.layouts:
                for mode in args.modes:
                    try:
                        rate = step_rate(cfg, device, precision, layout == "channels_last", mode == "compiled",
                                         batch, size, steps, warmup)
                    except Exception as err:  # noqa: BLE001  (e.g. no C++ compiler for compiled; the other rows still count)
                        print(f"{norm:<6} {precision:<9} {layout:<13} {mode:<8} failed: {str(err).splitlines()[0][:80]}")
                        continue
                    if (precision, layout, mode) == ("fp32", "nchw", "eager"):
                        baseline = rate
                    ratio = f"{rate / baseline:.2f}x" if baseline else "-"
                    print(f"{norm:<6} {precision:<9} {layout:<13} {mode:<8} {_fmt(rate):>10} {ratio:>7}")
    print(f"input: uint8 to {device} + normalize  {_fmt(input_rate(device, batch, size, steps))} images/s")
    if args.loader is not None:
        rate, what = loader_rate(args.loader, steps)
        print(f"input: train loader alone ({what})  {_fmt(rate)} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
