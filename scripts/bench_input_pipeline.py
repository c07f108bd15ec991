"""Does the input pipeline keep the model fed? One run, two numbers and their ratio:

1. input pipeline images/s: iterate the real train DataLoader alone (decode, augment, collate,
   pin), exactly as ``python -m gnrepro.train`` builds it from the data config;
2. model consumption images/s: training steps (forward, backward, SGD step) of the configured model
   on synthetic tensors of the same shape, on the chosen device;

ratio = pipeline / model. Above 1 the loader keeps up; below 1 training waits on data (add
``data.num_workers``, or faster storage/decoding, or another ``data.loader``).

``--loaders pil,pil_uint8[,gpu]`` times the train loader once per ``data.loader`` (each batch
carried to the device and normalized there, as the trainer receives it) and prints each one's
images/s as a ratio to the first's; on CUDA, ``pil_uint8`` and ``gpu`` also once with each batch
prepared in the loop instead of one batch ahead (gnrepro/data/overlap.py), as a ratio.

Run it on a real copy or on a fake ImageNet it writes itself (random JPEGs about ImageNet's
average size, 500x375):

    python scripts/bench_input_pipeline.py data=imagenet data.root=/data/imagenet batch=32
    python scripts/bench_input_pipeline.py --fake-images 256 batch=8 data.num_workers=2
    python scripts/bench_input_pipeline.py --fake-images 256 --steps 5 norm=gn device=cuda
    python scripts/bench_input_pipeline.py --fake-images 256 --loaders pil,pil_uint8,gpu device=cuda

Everything after the options is a training-config override (same keys as ``gnrepro.train``);
one step here is ``batch`` images (one worker's share: the model is timed at the per-worker batch).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gnrepro.settings.validate  # noqa: E402,F401  (registers the run_name resolver)
from gnrepro.models.build import build_model  # noqa: E402
from gnrepro.data import build_datasets, build_loaders, fake, limit_train  # noqa: E402
from gnrepro.data.device_feed import LOADERS  # noqa: E402
from gnrepro.engine.execution import build_execution, pick_device  # noqa: E402
from gnrepro.data.sampling import StepBatchSampler  # noqa: E402
from gnrepro.engine.throughput import time_steps  # noqa: E402
from gnrepro.resources import CONFIGS  # noqa: E402


def pipeline_rate(loader, steps: int) -> tuple[float, int]:
    """Images/s of the train loader alone; the first batch (worker start-up) is not timed."""
    it = iter(loader)
    next(it)
    seen, start = 0, time.perf_counter()
    for _ in range(steps):
        try:
            images, _ = next(it)
        except StopIteration:
            it = iter(loader)
            images, _ = next(it)
        seen += len(images)
    if images.is_cuda:  # batches normalized on the GPU are ready only once its queue has run
        torch.cuda.synchronize(images.device)
    return seen / (time.perf_counter() - start), seen


def compose_train(overrides: list[str]):
    """The training config of ``overrides``, composed as ``python -m gnrepro.train`` composes it."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def build_train_loader(overrides: list[str], with_splits: bool = False, loader: str | None = None, device=None):
    """The train DataLoader of one worker (``batch`` images a step), exactly as training builds it
    from the config of ``overrides`` (with ``data.loader=loader`` if given, batches then arriving on
    ``device``); returns ``(loader, cfg)`` (and the splits if asked)."""
    cfg = compose_train(overrides)
    if loader is not None:
        cfg.data.loader = loader
    splits = build_datasets(cfg.data)
    limit_train(splits, cfg.data, cfg.batch)
    sampler = StepBatchSampler(len(splits.train), cfg.batch, 1, cfg.seed)
    train, _ = build_loaders(splits, cfg.data, sampler, cfg.eval_batch, device)
    return (train, cfg, splits) if with_splits else (train, cfg)


def model_rate(cfg, shape, num_classes: int, device, steps: int, warmup: int = 2) -> float:
    """Images/s of the trainer's training steps on synthetic tensors of ``shape``, the model executed
    as the run of ``cfg`` executes it (its precision, layout and compile mode: build_execution), so the
    ratio compares the loader with the step it has to feed. One worker's share: BN's statistics over the
    ``batch`` images a worker sees (workers=1 for this one-worker step)."""
    execution = build_execution(cfg, device)
    model = execution.place(build_model(cfg, num_classes, shape[1], workers=1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = execution.images(torch.randn(shape))
    targets = torch.randint(0, num_classes, (shape[0],), device=device)
    return time_steps(execution.compile(model), optimizer, images, targets, steps, warmup, execution)


def dali_batches(cfg, device):
    """NVIDIA DALI's own ResNet-50 training pipeline (the anchor of issue 23 for a fed GPU) over the
    train files and labels of ``cfg``, at its batch: the file reader, JPEG decode fused with the
    RandomResizedCrop box (scale 8-100%, aspect 3/4-4/3; ``device="mixed"``: nvJPEG on a GPU), resize
    to the train crop, flip 1/2, normalization to float CHW. Yields (images on ``device``, labels),
    epoch after epoch. Not a training loader of this suite (gnrepro/data/gpu_decode.py says why)."""
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.plugin.base_iterator import LastBatchPolicy
    from nvidia.dali.plugin.pytorch import DALIGenericIterator

    data = cfg.data.copy()
    data.loader = "gpu"  # the split as the GPU loader reads it: every train file's path and label
    files = build_datasets(data).train.dataset
    cuda, crop = device.type == "cuda", int(cfg.data.train_crop)

    @pipeline_def(batch_size=cfg.batch, num_threads=max(1, int(cfg.data.num_workers)),
                  device_id=(device.index or 0) if cuda else None, seed=cfg.seed)
    def pipeline():
        jpegs, labels = fn.readers.file(files=files.paths, labels=files.labels, random_shuffle=True, name="reader")
        images = fn.decoders.image_random_crop(jpegs, device="mixed" if cuda else "cpu", output_type=types.RGB,
                                               random_area=[0.08, 1.0], random_aspect_ratio=[3 / 4, 4 / 3])
        images = fn.resize(images, resize_x=crop, resize_y=crop)
        images = fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="CHW",
                                          mean=[255 * m for m in cfg.data.mean], std=[255 * s for s in cfg.data.std],
                                          mirror=fn.random.coin_flip())
        return images, labels

    # the last batch of an epoch is dropped, as StepBatchSampler drops it: every step has ``batch`` images
    epochs = DALIGenericIterator(pipeline(), ["images", "labels"], reader_name="reader",
                                 last_batch_policy=LastBatchPolicy.DROP, auto_reset=True)
    while True:
        for batch in epochs:
            yield batch[0]["images"].to(device, non_blocking=True), batch[0]["labels"].view(-1)


def dali_rate(cfg, device, steps: int) -> tuple[float, str]:
    """Images/s of :func:`dali_batches`, timed as the loaders are (:func:`pipeline_rate`)."""
    from nvidia.dali import __version__

    rate, _ = pipeline_rate(dali_batches(cfg, device), steps)
    return rate, f"NVIDIA DALI {__version__}, decode on {'mixed' if device.type == 'cuda' else 'cpu'}"


def _fmt(rate: float) -> str:
    """At least three significant digits, never an exponent (CPU model rates are below 1)."""
    return f"{rate:.1f}" if rate >= 100 else f"{rate:.3g}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fake-images", type=int, default=0,
                        help="write a fake ImageNet of this many train images (8 classes) to a temp dir and use it")
    parser.add_argument("--fake-size", type=int, nargs=2, default=(500, 375), metavar=("W", "H"),
                        help="size of the fake images (default: about ImageNet's average, 500x375)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps for each measurement")
    parser.add_argument("--model-steps", type=int, default=None, help="timed model steps (default: --steps)")
    parser.add_argument("--loaders", default=None, metavar="A,B",
                        help=f"time the train loader for each data.loader in this list ({', '.join(LOADERS)}), side by side")
    parser.add_argument("--dali", action="store_true",
                        help="also time NVIDIA DALI's own ResNet-50 pipeline on the same files, the anchor "
                             "(pip install 'gnrepro[dali]')")
    parser.add_argument("overrides", nargs="*", help="training-config overrides, e.g. data=imagenet batch=32")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.loaders is not None:
        args.loaders = args.loaders.split(",")
        unknown = [name for name in args.loaders if name not in LOADERS]
        if unknown:
            parser.error(f"--loaders: unknown data.loader {unknown[0]!r}; choose from {', '.join(LOADERS)}")

    if args.dali and importlib.util.find_spec("nvidia.dali") is None:
        parser.exit(2, "gnrepro: error: --dali needs NVIDIA DALI, which is not installed: "
                       "pip install 'gnrepro[dali]' (or nvidia-dali-cuda120 for a CUDA 12 driver)\n")

    with tempfile.TemporaryDirectory() as tmp:
        overrides = list(args.overrides)
        if args.fake_images:
            per_class = max(1, args.fake_images // 8)
            fake.make_imagenet(tmp, classes=8, train_per_class=per_class, val_per_class=1, size=tuple(args.fake_size))
            overrides = ["data=imagenet", f"data.root={tmp}", *overrides]
        cfg = compose_train(overrides)
        device = pick_device(cfg.device)
        if args.loaders and "loader" not in cfg.data:
            parser.error(f"--loaders needs a data set read from image files (imagenet, pets, imagenette), not data={cfg.data.name}")
        if args.dali and "train_crop" not in cfg.data:
            parser.exit(2, f"gnrepro: error: --dali times photo data sets (imagenet, imagenette, pets), not "
                           f"data={cfg.data.name}\n")
        rates, serial = {}, {}
        for loader in args.loaders or [None]:
            train, cfg, splits = build_train_loader(overrides, with_splits=True, loader=loader, device=device)
            in_rate, seen = pipeline_rate(train, args.steps)
            rates[loader] = in_rate
            if getattr(train, "overlap", False):  # also the same loader preparing each batch in the loop
                train.overlap = False
                serial[loader], _ = pipeline_rate(train, args.steps)
                train.overlap = True
        in_rate = rates[(args.loaders or [None])[0]]
        images, _ = next(iter(train))
        shape = tuple(images.shape)

        out_rate = model_rate(cfg, shape, splits.num_classes, device, args.model_steps or args.steps)
        if args.dali:
            dali, dali_what = dali_rate(cfg, device, args.steps)

    workers = cfg.data.get("num_workers", 0)
    print(f"data={cfg.data.name}  batch={cfg.batch}  tensor {list(shape)}  data.num_workers={workers}  "
          f"cpu cores={os.cpu_count()}  torch threads={torch.get_num_threads()}")
    if args.loaders:
        for loader, rate in rates.items():
            print(f"data.loader={loader:<9} : {_fmt(rate):>8} images/s  ({rate / in_rate:.2f}x {args.loaders[0]}; "
                  f"{seen} images each, to {device} and normalized)")
            if loader in serial:
                print(f"data.loader={loader:<9} prepared in the loop, not ahead : {_fmt(serial[loader]):>8} images/s  "
                      f"(ahead/in the loop = {rate / serial[loader]:.2f}x)")
    if args.dali:
        print(f"anchor: {dali_what} : {_fmt(dali):>8} images/s  ({dali / in_rate:.2f}x "
              f"{args.loaders[0] if args.loaders else 'the train loader'}; DALI's ResNet-50 pipeline on the same files)")
        if "gpu" in rates:
            print(f"data.loader=gpu / DALI = {rates['gpu'] / dali:.2f}  (1 = as fast as the anchor)")
    print(f"input pipeline : {_fmt(in_rate):>8} images/s  ({seen} images, train loader alone"
          f"{f', data.loader={args.loaders[0]}' if args.loaders else ''})")
    how = f"precision={cfg.precision} channels_last={cfg.channels_last} compile={cfg.compile}"
    print(f"model ({cfg.model.name}, {cfg.norm.name}, {device}, {how}) : {_fmt(out_rate):>8} images/s  "
          "(train steps on synthetic tensors)")
    verdict = "keeps up" if in_rate >= out_rate else "is the bottleneck: raise data.num_workers"
    print(f"ratio pipeline/model = {in_rate / out_rate:.2f}  (the input pipeline {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
