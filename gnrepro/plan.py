"""Dry run of a sweep: ``python -m gnrepro.plan experiment=fig1_batch_size [overrides]``.

Expands an experiment preset (its ``hydra.sweeper.params``) and any comma-list overrides exactly the
way Hydra's basic sweeper does for ``python -m gnrepro.train -m``, and lists every run with its
folder, its status on disk (complete / failed / partial / pending), the images it will process
(epochs x training images) and the GPU-hours they cost at a stated throughput. Nothing is trained
and no data is read. The paper's sweeps are listed in Sec. 4.1 (Tables 1-3, Figure 1).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

import gnrepro.config  # noqa: F401  (registers the run_name resolver used by hydra.sweep.subdir)
from gnrepro.preflight import CONFIGS


# Training images per epoch, for the cost estimate only (no data is read).
TRAIN_IMAGES = {
    "imagenet": 1_281_167,  # ILSVRC-2012 train
    "pets": 3_680,          # Oxford-IIIT Pets, the official trainval split (annotations/trainval.txt)
    "imagenette": 9_469,    # Imagenette train
    "cifar10": 50_000,
    "cifar100": 50_000,
    "digits": 1_437,        # the embedded proxy's fixed train split
}
# ResNet-50 training throughput of one V100-class GPU in fp32 (images/s); ResNet-101 is ~0.6x.
DEFAULT_THROUGHPUT = 400.0


@dataclass
class PlannedRun:
    overrides: list[str]
    folder: Path
    status: str
    images: int
    gpu_hours: float
    data: str
    model: str
    norm_tag: str
    batch: int
    workers: int
    epochs: int
    seed: int


def expand(overrides: list[str]) -> list[list[str]]:
    """The job list Hydra's basic sweeper would launch for ``-m <overrides>``: the preset's
    ``hydra.sweeper.params`` first, the command line after them (so the command line wins)."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        # Compose without sweeps to read the preset's sweeper params (sweep values cannot compose).
        parser = OverridesParser.create()
        plain = [o for o in overrides if not parser.parse_override(o).is_sweep_override()]
        cfg = compose(config_name="train", overrides=plain, return_hydra_config=True)
    params = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.params or {}).items()]
    parsed = parser.parse_overrides(params + list(overrides))
    (jobs,) = BasicSweeper.split_arguments(parsed, None)
    return jobs


def run_status(folder: Path) -> str:
    summary = folder / "summary.json"
    if summary.is_file():
        try:
            return json.loads(summary.read_text()).get("status", "partial")
        except json.JSONDecodeError:
            return "partial"
    return "partial" if (folder / "metrics.jsonl").is_file() else "pending"


def plan(overrides: list[str], throughput: float = DEFAULT_THROUGHPUT, root: Path | None = None) -> list[PlannedRun]:
    """Compose every job of the sweep and describe it; ``root`` is the directory the sweep runs from."""
    root = Path.cwd() if root is None else Path(root)
    runs = []
    jobs = expand(overrides)
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        for job in jobs:
            cfg = compose(config_name="train", overrides=job, return_hydra_config=True)
            folder = root / cfg.hydra.sweep.dir / cfg.hydra.sweep.subdir
            n_train = TRAIN_IMAGES.get(cfg.data.name)
            subset = cfg.data.get("subset")
            if subset is not None:
                n_train = subset if n_train is None else min(subset, n_train)
            images = cfg.epochs * n_train if n_train else 0
            scale = 1.0 if cfg.model.name == "resnet50" else 0.6  # deeper model, slower
            runs.append(PlannedRun(
                overrides=[o for o in job], folder=folder, status=run_status(folder), images=images,
                gpu_hours=images / (throughput * scale) / 3600.0, data=cfg.data.name, model=cfg.model.name,
                norm_tag=gnrepro.config.norm_tag(cfg.norm, cfg.conv), batch=cfg.batch, workers=cfg.workers,
                epochs=cfg.epochs, seed=cfg.seed,
            ))
    return runs


def format_plan(runs: list[PlannedRun], throughput: float) -> str:
    lines = [f"{'status':<9} {'images':>13} {'GPU-h':>8}  folder"]
    for r in runs:
        lines.append(f"{r.status:<9} {r.images:>13,} {r.gpu_hours:>8.2f}  {r.folder}")
    todo = [r for r in runs if r.status != "complete"]
    lines.append(
        f"{len(runs)} runs, {len(runs) - len(todo)} complete, {len(todo)} to run: "
        f"{sum(r.images for r in todo):,} images, {sum(r.gpu_hours for r in todo):.1f} GPU-hours "
        f"at {throughput:g} images/s per GPU (ResNet-50; ResNet-101 at 0.6x that)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gnrepro.plan", description=__doc__.splitlines()[0])
    ap.add_argument("overrides", nargs="*", help="the same overrides as python -m gnrepro.train -m ...")
    ap.add_argument("--throughput", type=float, default=DEFAULT_THROUGHPUT,
                    help=f"training images/s of one GPU on ResNet-50 (default {DEFAULT_THROUGHPUT:g})")
    args = ap.parse_args(argv)
    print(format_plan(plan(args.overrides, args.throughput), args.throughput))
    return 0


if __name__ == "__main__":
    sys.exit(main())
