"""Training images/s of one model under each execution setting, side by side in one run.

For each norm (bn, gn, gn_ws), each number of BN workers per step (``--workers``: Figure 1's runs
emulate 8 workers of 2 images on one device) and each combination of precision (fp32 | tf32 | bf16 |
fp16), memory layout (nchw | channels_last) and mode (eager | default | reduce-overhead: torch.compile,
the last with CUDA graphs), time full training steps (forward, loss, backward, fused SGD, through
``gnrepro.engine.loop.train_one_epoch`` itself: the sync-free loop) on synthetic device tensors, and
print images/s with the ratio to the fp32 / nchw / eager row of the same norm and workers, measured in
the same run, then each norm's ratio to BN's at the same setting. Each compiled row starts from a reset
compiler and prints how many graphs it compiled; a compiled row that compiled nothing says so instead
of printing an eager speed. A last row times the input side alone (uint8 batches copied to the device
and normalized there); ``--loader`` adds the real train loader of training-config overrides and
``--end-to-end N`` the trainer fed by its real loader on N synthetic ImageNet-sized JPEGs.

    python scripts/bench_throughput.py --device cuda                       # ResNet-50, 224 px, batch 64
    python scripts/bench_throughput.py --device cuda --batch 2 --workers 1 8 --modes eager reduce-overhead
    python scripts/bench_throughput.py --device cuda --precisions fp32 tf32 bf16 --end-to-end 512
    python scripts/bench_throughput.py --device cpu --model resnet14 --size 32 --batch 4 --steps 3

On CUDA each timed window is bracketed by ``torch.cuda.synchronize()`` after ``--warmup`` steps
(which also absorb torch.compile's compilation, CUDA graph capture and cuDNN's autotuning).
"""
from __future__ import annotations

import argparse
import itertools
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
from gnrepro.engine.execution import COMPILE_MODES, PRECISIONS, build_execution, resolve_cudnn_benchmark  # noqa: E402
from gnrepro.engine.throughput import time_steps  # noqa: E402

MODELS = ("resnet14", "resnet26", "resnet50", "resnet101")
NORMS = ("bn", "gn", "gn_ws")
CLASSES = 1000


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compiled_graphs() -> int:
    """Graphs dynamo has compiled in this process (its counter survives ``torch.compiler.reset()``, so a
    row counts the difference): none during a "compiled" row means the row ran eager (e.g. past the
    recompile limit), which the table then says instead of a speed."""
    from torch._dynamo.utils import counters  # dynamo's own statistics (no public equivalent)

    return int(counters["stats"]["unique_graphs"])


def step_rate(cfg, device, precision: str, channels_last: bool, mode: str, batch: int, workers: int, size: int,
              steps: int, warmup: int, backend: str = "inductor") -> tuple[float, int]:
    """(images/s, compiled graphs) of ``steps`` training steps after ``warmup`` steps: one fresh model
    per setting, executed as a run with these settings would be (``build_execution``), a step being
    ``batch * workers`` images whose BN statistics are per worker (Figure 1's one-device emulation).
    Every setting starts from a reset compiler, so no row inherits another's graphs or hits dynamo's
    recompile limit (8) that a dozen compiled variants in one process would otherwise reach."""
    torch.compiler.reset()
    torch.manual_seed(0)
    core = build_model(cfg, CLASSES, 3, workers=workers)
    execution = build_execution(OmegaConf.merge(cfg, {"precision": precision, "channels_last": channels_last,
                                                      "compile": mode}), device)
    execution.place(core)
    optimizer = torch.optim.SGD(core.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4, fused=True)
    images = execution.images(torch.randn(batch * workers, 3, size, size))
    targets = torch.randint(0, CLASSES, (batch * workers,), device=device)
    before = compiled_graphs()
    rate = time_steps(execution.compile(core, backend), optimizer, images, targets, steps, warmup, execution)
    return rate, compiled_graphs() - before


class Steps:
    """The next ``n`` batches of an iterator, sized as the trainer's loop asks of a loader."""

    def __init__(self, batches, n: int):
        self.batches, self.n = batches, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return itertools.islice(self.batches, self.n)


def end_to_end_rate(cfg, device, images: int, batch: int, steps: int, warmup: int, data_loader: str = "pil") -> tuple[float, str, dict]:
    """Images/s of the trainer's own loop fed by the real train loader (decode, crop, collate in
    ``data.num_workers`` processes, overlapped with the step) on synthetic JPEGs of ImageNet's size
    distribution (gnrepro.data.fake), fp32 eager as a run's defaults: what a user's epoch would see.
    ``data_loader``: the ``data.loader`` feeding it (``gpu``/``pil_uint8`` prepare one batch ahead on
    CUDA). Also times, in the same run, the loader alone and the step alone on one of its batches:
    ``both / min(alone)`` near 1 means the two overlap; near ``1 / (1/loader + 1/step)`` they take turns."""
    import tempfile

    from gnrepro.data import fake

    with tempfile.TemporaryDirectory() as tmp:
        fake.make_imagenet(tmp, classes=8, train_per_class=max(1, images // 8), val_per_class=1, size=(500, 375))
        loader, lcfg = build_train_loader([f"model={cfg.model.name}", f"norm={cfg.norm.name}", "data=imagenet",
                                           f"data.root={tmp}", f"batch={batch}", "workers=1"], device=device,
                                          loader=data_loader)
        torch.manual_seed(0)
        execution = build_execution(lcfg, device)
        model = execution.place(build_model(lcfg, CLASSES, 3, workers=1))
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, fused=device.type == "cuda")
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        def forever():  # re-iterates the loader (itertools.cycle would replay stored batches, untimed decode)
            while True:
                yield from loader

        batches = forever()
        from gnrepro.engine.loop import train_one_epoch

        train_one_epoch(model, Steps(batches, warmup), optimizer, scheduler, device, epoch=0,
                        progress=False, execution=execution)
        sync(device)
        start = time.perf_counter()
        train_one_epoch(model, Steps(batches, steps), optimizer, scheduler, device, epoch=0, progress=False,
                        execution=execution)
        sync(device)
        rate = steps * batch / (time.perf_counter() - start)
        alone, _ = pipeline_rate(loader, steps)  # the loader alone (to the device, normalized)
        images_, targets_ = next(iter(loader))
        step = time_steps(model, optimizer, images_.to(device), targets_.to(device), steps, 1, execution)  # the step alone
    return rate, f"{lcfg.data.loader} loader, data.num_workers={lcfg.data.num_workers}", {"loader": alone, "step": step}


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50", choices=MODELS)
    parser.add_argument("--norms", nargs="+", default=list(NORMS), choices=NORMS)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=list(PRECISIONS))
    parser.add_argument("--layouts", nargs="+", default=["nchw", "channels_last"], choices=["nchw", "channels_last"])
    parser.add_argument("--modes", nargs="+", default=["eager", "default", "reduce-overhead"],
                        choices=["eager", "compiled", *COMPILE_MODES[1:]],
                        help="eager, or a torch.compile mode (compiled = default); reduce-overhead adds CUDA graphs")
    parser.add_argument("--workers", nargs="+", type=int, default=[1],
                        help="BN workers per step on this one device (Figure 1's emulation: --batch 2 --workers 8)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--batch", type=int, default=None, help="images per worker (default 64 on CUDA, 4 on CPU)")
    parser.add_argument("--size", type=int, default=None, help="image side (default 224 on CUDA, 32 on CPU)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per setting (default 50 CUDA, 3 CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 10 CUDA, 1 CPU)")
    parser.add_argument("--loader", nargs="*", default=None, metavar="OVERRIDE",
                        help="also time the real train loader of these training-config overrides "
                             "(e.g. data=imagenet data.root=/data/imagenet batch=64)")
    parser.add_argument("--end-to-end", type=int, default=0, metavar="IMAGES",
                        help="also time the trainer fed by its real loader on this many synthetic ImageNet-sized JPEGs")
    parser.add_argument("--end-to-end-loader", default="pil", choices=["pil", "pil_uint8", "gpu"],
                        help="data.loader of the end-to-end row (gpu: nvJPEG, crops one batch ahead; needs CUDA)")
    parser.add_argument("--backend", default="inductor", choices=["inductor", "aot_eager", "eager"],
                        help="dynamo backend of compiled rows: inductor (what runs use); eager only checks the "
                             "benchmark itself (graph capture without code generation, seconds per row on a CPU)")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    modes = list(dict.fromkeys("default" if m == "compiled" else m for m in args.modes))

    device = pick_device(args.device)
    cuda = device.type == "cuda"
    batch, size = args.batch or (64 if cuda else 4), args.size or (224 if cuda else 32)
    steps, warmup = args.steps or (50 if cuda else 3), args.warmup if args.warmup is not None else (10 if cuda else 1)
    torch.backends.cudnn.benchmark = resolve_cudnn_benchmark("auto", deterministic=False)
    small_input = "true" if size < 64 else "false"  # ImageNet's stem (7x7/2 + max-pool) only on large images
    where = torch.cuda.get_device_name(device) if cuda else f"cpu, {torch.get_num_threads()} threads"
    print(f"{args.model}  batch {batch}/worker  size {size}  {steps} timed steps after {warmup}  on {device} ({where})  "
          f"torch {torch.__version__}" + (f"  compiled rows: backend={args.backend}" if args.backend != "inductor" else ""))
    print(f"{'norm':<6} {'workers':>7} {'precision':<9} {'layout':<13} {'mode':<15} {'images/s':>10} {'ratio':>7} {'graphs':>6}")
    rates: dict[tuple, float] = {}
    for norm in args.norms:
        cfg = compose_train([f"model={args.model}", f"norm={norm}", "workers=1", f"model.small_input={small_input}"])
        for workers in args.workers:
            baseline = None
            for precision in args.precisions:
                for layout in args.layouts:
                    for mode in modes:
                        row = f"{norm:<6} {workers:>7} {precision:<9} {layout:<13} {mode:<15}"
                        try:
                            rate, graphs = step_rate(cfg, device, precision, layout == "channels_last",
                                                     "off" if mode == "eager" else mode, batch, workers, size, steps, warmup,
                                                     args.backend)
                        except Exception as err:  # noqa: BLE001  (e.g. no C++ compiler for compiled; the other rows still count)
                            print(f"{row} failed: {str(err).splitlines()[0][:80]}")
                            continue
                        if mode != "eager" and graphs == 0:  # never print an eager speed under a compiled label
                            print(f"{row} not compiled: dynamo compiled no graph, the row would time eager steps")
                            continue
                        rates[(norm, workers, precision, layout, mode)] = rate
                        if (precision, layout, mode) == ("fp32", "nchw", "eager"):
                            baseline = rate
                        ratio = f"{rate / baseline:.2f}x" if baseline else "-"
                        print(f"{row} {_fmt(rate):>10} {ratio:>7} {graphs:>6}")
    for norm in [n for n in args.norms if n != "bn"] if "bn" in args.norms else []:
        pairs = [(k[1:], rates[k] / rates[("bn", *k[1:])]) for k in rates if k[0] == norm and ("bn", *k[1:]) in rates]
        for (workers, precision, layout, mode), ratio in pairs:
            print(f"{norm}/bn  workers {workers}  {precision} {layout} {mode}: {ratio:.2f}x BN's images/s")
    print(f"input: uint8 to {device} + normalize  {_fmt(input_rate(device, batch, size, steps))} images/s")
    if args.loader is not None:
        rate, what = loader_rate(args.loader, steps)
        print(f"input: train loader alone ({what})  {_fmt(rate)} images/s")
    if args.end_to_end:
        cfg = compose_train([f"model={args.model}", f"norm={args.norms[0]}"])
        rate, what, alone = end_to_end_rate(cfg, device, args.end_to_end, batch, steps, warmup, args.end_to_end_loader)
        print(f"end to end: {args.norms[0]} fp32 eager fed by the real {what}  {_fmt(rate)} images/s")
        loader, step = alone["loader"], alone["step"]
        taking_turns = 1 / (1 / loader + 1 / step)
        print(f"overlap: loader alone {_fmt(loader)}, step alone {_fmt(step)}, both {_fmt(rate)} images/s; "
              f"both/min(alone) = {rate / min(loader, step):.2f} (1 = fully overlapped), "
              f"both/taking-turns = {rate / taking_turns:.2f} (1 = serialized)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
