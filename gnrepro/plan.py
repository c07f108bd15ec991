"""Dry run of a sweep: ``python -m gnrepro.plan experiment=fig1_batch_size [overrides]``.

Expands an experiment preset (its ``hydra.sweeper.params``) and any comma-list overrides exactly the
way Hydra's basic sweeper does for ``python -m gnrepro.train -m``, and lists every run with its
folder, its status on disk (complete / failed / partial / pending), the images it will process
(epochs x training images) and the GPU-hours they cost at a stated throughput. Nothing is trained
and no data is read. The paper's sweeps are listed in Sec. 4.1 (Tables 1-3, Figure 1).

``--throughput measure`` times a few training steps of every distinct setting of the sweep (model,
norm, batch, workers, input) on this machine's device (gnrepro/engine/throughput.py) and costs each run at
its own measured rate, instead of one assumed number: small batches cost more per image.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import gnrepro.settings.validate  # noqa: F401  (registers the run_name resolver used by hydra.sweep.subdir)
from gnrepro import runfiles
from gnrepro.data import train_images
import gnrepro.engine.throughput
from gnrepro.errors import EXIT_USER, ArgumentParser, error_line
from gnrepro.engine.execution import pick_device
from gnrepro.layers.norm_registry import norm_tag
from gnrepro.settings.preflight import check_command_line, check_jobs, job_config, sweep_jobs

MEASURE = "measure"  # --throughput measure: time each setting here instead of assuming a number

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
    rate: float = 0.0  # the images/s its GPU-hours assume
    setting: str = ""  # the measured setting it shares (--throughput measure), else empty


def run_status(folder: Path) -> str:
    """complete / failed / partial / pending, or ``damaged (<file>: <reason>)`` (gnrepro.runfiles)."""
    return str(runfiles.run_status(folder))


def plan(overrides: list[str], throughput: float | str = DEFAULT_THROUGHPUT, root: Path | None = None,
         measured: dict | None = None, steps: int | None = None) -> list[PlannedRun]:
    """Compose every job of the sweep and describe it; ``root`` is the directory the sweep runs from.

    ``throughput``: images/s of ResNet-50 (ResNet-101 at 0.6x), or ``"measure"``: each distinct
    setting timed on this machine's device (``steps`` timed steps each, default
    gnrepro.engine.throughput.TIMED_STEPS); ``measured`` (a dict) then receives ``{label: images/s}``.
    """
    root = Path.cwd() if root is None else Path(root)
    runs = []
    check_command_line(overrides)  # unknown group choices, as the trainer names them
    check_jobs(["-m", *overrides], locks=False)  # every job's values, as the trainer checks them
    rates: dict[tuple, float] = {}
    for job in sweep_jobs(overrides):
        cfg, _, folder = job_config(job, multirun=True)
        folder = root / folder
        n_train = train_images(cfg.data)
        subset = cfg.data.get("subset")
        if subset is not None:
            n_train = subset if n_train is None else min(subset, n_train)
        images = cfg.epochs * n_train if n_train else 0
        label = ""
        if throughput == MEASURE:
            setting, device = gnrepro.engine.throughput.setting_of(cfg), pick_device(cfg.device)
            label = f"{setting.label} on {device}"
            if (setting.key, device) not in rates:
                rates[setting.key, device] = gnrepro.engine.throughput.measure(
                    cfg, device, steps=steps or gnrepro.engine.throughput.TIMED_STEPS)
                if measured is not None:
                    measured[label] = rates[setting.key, device]
            rate = rates[setting.key, device]
        else:
            rate = throughput * (1.0 if cfg.model.name == "resnet50" else 0.6)  # deeper model, slower
        runs.append(PlannedRun(
            overrides=[o for o in job], folder=folder, status=run_status(folder), images=images,
            gpu_hours=images / rate / 3600.0, data=cfg.data.name, model=cfg.model.name,
            norm_tag=norm_tag(cfg.norm, cfg.conv), batch=cfg.batch, workers=cfg.workers,
            epochs=cfg.epochs, seed=cfg.seed, rate=rate, setting=label,
        ))
    return runs


def format_measured(measured: dict[str, float]) -> str:
    """The table of measured settings and their images/s."""
    lines = [f"measured here ({gnrepro.engine.throughput.WARMUP_STEPS} warm-up + {gnrepro.engine.throughput.TIMED_STEPS} timed "
             f"training steps on synthetic input per setting):", f"{'images/s':>10}  setting"]
    lines += [f"{rate:>10.1f}  {label}" for label, rate in measured.items()]
    return "\n".join(lines)


def format_plan(runs: list[PlannedRun], throughput: float | str) -> str:
    measured = throughput == MEASURE
    lines = [f"{'status':<9} {'images':>13} {'GPU-h':>8}" + (f" {'img/s':>8}" if measured else "") + "  folder"]
    for r in runs:
        rate = f" {r.rate:>8.1f}" if measured else ""
        lines.append(f"{r.status:<9} {r.images:>13,} {r.gpu_hours:>8.2f}{rate}  {r.folder}")
    todo = [r for r in runs if r.status != runfiles.COMPLETE]
    at = ("at each setting's measured images/s on this machine" if measured
          else f"at {throughput:g} images/s per GPU (ResNet-50; ResNet-101 at 0.6x that)")
    lines.append(
        f"{len(runs)} runs, {len(runs) - len(todo)} complete, {len(todo)} to run: "
        f"{sum(r.images for r in todo):,} images, {sum(r.gpu_hours for r in todo):.1f} GPU-hours {at}")
    return "\n".join(lines)


def throughput(text: str) -> float | str:
    """--throughput: a finite number of images/s above 0, or ``measure``."""
    if text.strip().lower() == MEASURE:
        return MEASURE
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"--throughput must be a finite number of images/s above 0 or 'measure', got {text!r}; "
                         f"e.g. --throughput {DEFAULT_THROUGHPUT:g} or --throughput measure")
    return value


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m gnrepro.plan", description=__doc__.splitlines()[0])
    ap.add_argument("overrides", nargs="*", help="the same overrides as python -m gnrepro.train -m ...")
    ap.add_argument("--throughput", default=str(DEFAULT_THROUGHPUT),
                    help=f"training images/s of one GPU on ResNet-50 (default {DEFAULT_THROUGHPUT:g}), or 'measure': "
                         f"time {gnrepro.engine.throughput.TIMED_STEPS} steps of every distinct setting on this machine's device")
    args = ap.parse_args(argv)
    measured: dict[str, float] = {}
    try:
        rate = throughput(args.throughput)
        runs = plan(args.overrides, rate, measured=measured)
    except ValueError as err:  # a UserError, or pandas/argparse refusing a value
        print(error_line(err), file=sys.stderr)
        return EXIT_USER
    if rate == MEASURE:
        print(format_measured(measured))
    print(format_plan(runs, rate))
    return 0


if __name__ == "__main__":
    sys.exit(main())
