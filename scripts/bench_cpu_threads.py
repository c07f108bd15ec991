"""How to spend a small CPU's cores on a sweep: one run with every thread, or one single-threaded run per core.

Times one training step of ResNet-50 (the digits proxy: 1 channel, 10 px, GN) with
``torch.set_num_threads(1)`` and with all threads, alternating the two settings step by step so
both see the same machine load, for each global batch of a sweep. A sweep with ``J`` parallel jobs
of 1 thread each beats a sequential sweep with ``J`` threads only when the 1-thread step is less
than ``J`` times slower. On CPU, PyTorch runs 1x1 convolutions of small batches on one thread through
a slower kernel than on several threads, which is why the answer depends on the batch.

    python scripts/bench_cpu_threads.py                     # images per step of the proxy Figure 1
    python scripts/bench_cpu_threads.py --images 16 256 --size 32
"""
from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # the gnrepro package and the sibling benchmark

from bench_per_worker_bn import alternating_medians, step_time  # noqa: E402

from gnrepro.layers.convs import build_conv  # noqa: E402
from gnrepro.layers.norm_registry import build_norm  # noqa: E402
from gnrepro.models.resnet import ResNet  # noqa: E402


def threads_step(threads: int, model, opt, x, y) -> float:
    """One timed training step on ``threads`` CPU threads."""
    torch.set_num_threads(threads)
    return step_time(model, opt, x, y, torch.device("cpu"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs="+", default=[4, 8, 16, 32, 64],
                        help="images per step (batch x workers); default: the proxy Figure 1 sweep (2 workers)")
    parser.add_argument("--size", type=int, default=10, help="input resolution (small-input stem below 64)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per setting (after 2 warm-up steps)")
    args = parser.parse_args()
    all_threads = torch.get_num_threads()
    torch.manual_seed(0)
    model = ResNet(50, partial(build_norm, "gn", groups=32), build_conv("plain"), num_classes=10, in_channels=1,
                   small_input=args.size < 64).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    print(f"ResNet-50, GN, {args.size} px, CPU; median of {args.steps} steps; all threads = {all_threads}")
    print(f"{'images/step':>11}  {'1 thread':>9}  {f'{all_threads} threads':>10}  ratio 1/all")
    for n in args.images:
        x, y = torch.randn(n, 1, args.size, args.size), torch.randint(0, 10, (n,))
        med = alternating_medians({t: partial(threads_step, t, model, opt, x, y) for t in (1, all_threads)}, args.steps)
        one, many = med[1], med[all_threads]
        print(f"{n:>11}  {one * 1e3:>7.0f}ms  {many * 1e3:>8.0f}ms  {one / many:>10.2f}x")
    torch.set_num_threads(all_threads)


if __name__ == "__main__":
    main()
