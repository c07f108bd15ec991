"""The cost of emulating per-worker BN on one device, measured side by side in one run.

Compares one training step of ResNet-50 at the same global batch (``batch * workers`` images):
per-worker BN (``workers`` slices, each with its own statistics, the paper's setting) against
plain BN over the whole batch. Steps alternate between the two models so that both see the same
machine load; the medians and their ratio are printed.

    python scripts/bench_per_worker_bn.py                      # 8 workers x 4 images, 32 px, CPU
    python scripts/bench_per_worker_bn.py --batch 32 --size 224 --device cuda
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gnrepro.layers.convs import build_conv  # noqa: E402
from gnrepro.layers.norm_registry import build_norm  # noqa: E402
from gnrepro.models.resnet import ResNet  # noqa: E402


def step_time(model, opt, x, y, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def alternating_medians(settings: dict, steps: int, warmup: int = 2) -> dict:
    """Median seconds of each timed callable, calling them in turn each round so that all see the
    same machine load; the first ``warmup`` rounds are not counted."""
    times = {name: [] for name in settings}
    for i in range(steps + warmup):
        for name, timed in settings.items():
            t = timed()
            if i >= warmup:
                times[name].append(t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4, help="images per worker")
    parser.add_argument("--workers", type=int, default=8, help="BN workers emulated on the device")
    parser.add_argument("--size", type=int, default=32, help="input resolution (small-input stem below 64)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model (after 2 warm-up steps)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    n = args.batch * args.workers
    models = {}
    for name, workers in (("per-worker BN", args.workers), ("plain BN", 1)):
        model = ResNet(50, partial(build_norm, "bn", workers=workers), build_conv("plain"), num_classes=1000,
                       small_input=args.size < 64).to(device).train()
        models[name] = (model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))
    x = torch.randn(n, 3, args.size, args.size, device=device)
    y = torch.randint(0, 1000, (n,), device=device)
    med = alternating_medians(
        {name: partial(step_time, model, opt, x, y, device) for name, (model, opt) in models.items()}, args.steps)
    print(f"ResNet-50, {args.workers} workers x {args.batch} images = {n} per step, {args.size}px, {device}")
    for name, t in med.items():
        print(f"  {name:14s} median step {t * 1000:8.1f} ms  ({n / t:7.1f} images/s)")
    print(f"  overhead of the emulation: {med['per-worker BN'] / med['plain BN']:.3f}x the plain-BN step time")


if __name__ == "__main__":
    main()
