"""Dry run of a sweep: ``python -m gnrepro.plan experiment=fig1_batch_size [overrides]``.

Expands an experiment preset (its ``hydra.sweeper.params``) and any comma-list overrides exactly the
way Hydra's basic sweeper does for ``python -m gnrepro.train -m``, and lists every run with its
folder, its status on disk (complete / failed / partial / pending), the images it will process
(epochs x training images) and the GPU-hours they cost at a stated throughput. Nothing is trained
and no data is read. The paper's sweeps are listed in Sec. 4.1 (Tables 1-3, Figure 1).
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import gnrepro.config  # noqa: F401  (registers the run_name resolver used by hydra.sweep.subdir)
from gnrepro import runfiles
from gnrepro.data import train_images
from gnrepro.errors import EXIT_USER, ArgumentParser, ConfigError, error_line
from gnrepro.norm_registry import norm_tag
from gnrepro.preflight import check_command_line, check_jobs, job_config, sweep_jobs

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


def run_status(folder: Path) -> str:
    """complete / failed / partial / pending, or ``damaged (<file>: <reason>)`` (gnrepro.runfiles)."""
    return str(runfiles.run_status(folder))


def plan(overrides: list[str], throughput: float = DEFAULT_THROUGHPUT, root: Path | None = None) -> list[PlannedRun]:
    """Compose every job of the sweep and describe it; ``root`` is the directory the sweep runs from."""
    root = Path.cwd() if root is None else Path(root)
    runs = []
    check_command_line(overrides)  # unknown group choices, as the trainer names them
    check_jobs(["-m", *overrides], locks=False)  # every job's values, as the trainer checks them
    for job in sweep_jobs(overrides):
        cfg, _, folder = job_config(job, multirun=True)
        folder = root / folder
        n_train = train_images(cfg.data)
        subset = cfg.data.get("subset")
        if subset is not None:
            n_train = subset if n_train is None else min(subset, n_train)
        images = cfg.epochs * n_train if n_train else 0
        scale = 1.0 if cfg.model.name == "resnet50" else 0.6  # deeper model, slower
        runs.append(PlannedRun(
            overrides=[o for o in job], folder=folder, status=run_status(folder), images=images,
            gpu_hours=images / (throughput * scale) / 3600.0, data=cfg.data.name, model=cfg.model.name,
            norm_tag=norm_tag(cfg.norm, cfg.conv), batch=cfg.batch, workers=cfg.workers,
            epochs=cfg.epochs, seed=cfg.seed,
        ))
    return runs


def format_plan(runs: list[PlannedRun], throughput: float) -> str:
    lines = [f"{'status':<9} {'images':>13} {'GPU-h':>8}  folder"]
    for r in runs:
        lines.append(f"{r.status:<9} {r.images:>13,} {r.gpu_hours:>8.2f}  {r.folder}")
    todo = [r for r in runs if r.status != runfiles.COMPLETE]
    lines.append(
        f"{len(runs)} runs, {len(runs) - len(todo)} complete, {len(todo)} to run: "
        f"{sum(r.images for r in todo):,} images, {sum(r.gpu_hours for r in todo):.1f} GPU-hours "
        f"at {throughput:g} images/s per GPU (ResNet-50; ResNet-101 at 0.6x that)")
    return "\n".join(lines)


def throughput(text: str) -> float:
    """--throughput: a finite number of images/s above 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"--throughput must be a finite number of images/s above 0, got {text!r}; "
                         f"e.g. --throughput {DEFAULT_THROUGHPUT:g}")
    return value


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m gnrepro.plan", description=__doc__.splitlines()[0])
    ap.add_argument("overrides", nargs="*", help="the same overrides as python -m gnrepro.train -m ...")
    ap.add_argument("--throughput", default=str(DEFAULT_THROUGHPUT),
                    help=f"training images/s of one GPU on ResNet-50 (default {DEFAULT_THROUGHPUT:g})")
    args = ap.parse_args(argv)
    try:
        rate = throughput(args.throughput)
        runs = plan(args.overrides, rate)
    except (ConfigError, ValueError) as err:
        print(error_line(err), file=sys.stderr)
        return EXIT_USER
    print(format_plan(runs, rate))
    return 0


if __name__ == "__main__":
    sys.exit(main())
