"""Train one model under the paper's protocol (Sec. 4.1): ``python -m gnrepro.train norm=gn batch=2``.

The run's result is the median top-1 validation error of the final 5 epochs, as reported in the
paper. Everything the run produces lands in one folder named by its settings (see
``gnrepro.identity.run_name``): the resolved config, one JSON line of metrics per epoch, the
summary and the last checkpoint.

Runs survive interruption: relaunching the same command resumes from ``last.pt`` (model,
optimizer, schedule, epoch and step, RNG states; the data order is a function of seed and epoch),
a finished or failed run is not trained again, SIGTERM/SIGUSR1/SIGUSR2 save a checkpoint at the
next step and stop, and a non-finite loss stops the run and marks it failed.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import os
import random
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Subset

from gnrepro import finetune, runfiles
from gnrepro.build import build_model
from gnrepro.config import validate
from gnrepro.data import build_datasets, build_loaders, limit_train, set_epoch
from gnrepro.distributed import (
    Processes,
    any_process,
    average_bn_buffers,
    gather,
    hosted_workers,
    init_processes,
    launched_as_main,
    shutdown,
    sum_over_processes,
    workers_per_process,
    wrap,
)
from gnrepro.engine import DivergedError, EpochMeter, evaluate, train_one_epoch
from gnrepro.errors import EXIT_FAILED, EXIT_STOPPED, EXIT_USER, ConfigError, error_line
from gnrepro.loggers import build_logger
from gnrepro.norm_registry import norm_tag
from gnrepro.precise_bn import evaluation_statistics
from gnrepro.preemption import Preempted, PreemptionSignals
from gnrepro.preflight import CONFIGS, check_command_line, check_jobs
from gnrepro.probe import attach_probe
from gnrepro.resume import RunState, previous_state
from gnrepro.sampling import StepBatchSampler
from gnrepro.schedule import build_optimizer, build_scheduler

log = logging.getLogger("gnrepro")


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


def combine_train(stats: dict, procs: Processes) -> dict:
    """One epoch's training statistics over all processes (each saw its share of every step)."""
    loss_sum, wrong, seen = sum_over_processes(
        [stats["train_loss"] * stats["train_images"], stats["train_error"] * stats["train_images"] / 100,
         stats["train_images"]], procs)
    return {**stats, "train_loss": loss_sum / seen, "train_error": 100.0 * wrong / seen, "train_images": int(seen)}


def combine_eval(stats: dict, images: int, procs: Processes) -> dict:
    """Validation statistics over all processes' shards of the val split."""
    loss_sum, wrong, seen = sum_over_processes(
        [stats["val_loss"] * images, stats["val_error"] * images / 100, images], procs)
    return {"val_loss": loss_sum / seen, "val_error": 100.0 * wrong / seen}


def final_error(val_errors: list[float], last: int) -> float:
    """The paper's reported number: the median error of the final ``last`` epochs."""
    return statistics.median(val_errors[-last:])


def summarize(cfg: DictConfig, history: list[dict], status: str, device, **extra) -> dict:
    """The run's summary: its settings, its status and, when complete, its result."""
    val_errors = [r["val_error"] for r in history]
    seconds = sum(r["train_seconds"] for r in history)
    return {
        "status": status,
        "final_error": final_error(val_errors, cfg.final_epochs) if status == "complete" else None,
        "final_epochs": min(cfg.final_epochs, len(val_errors)),
        "val_errors": val_errors,
        "epochs_done": len(history),
        "norm": cfg.norm.name,
        "norm_tag": norm_tag(cfg.norm, cfg.conv),
        "conv": cfg.conv.name,
        "groups": cfg.norm.get("groups"),
        "channels_per_group": cfg.norm.get("channels_per_group"),
        "batch": cfg.batch,
        "workers": cfg.workers,
        "model": cfg.model.name,
        "data": cfg.data.name,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "wall_seconds": sum(r["epoch_seconds"] for r in history),
        "images_per_s": sum(r["train_images"] for r in history) / seconds if seconds else None,
        "device": str(device),
        "init": cfg.get("init"),
        **extra,
    }


def run(cfg: DictConfig, run_dir: Path, choices: dict | None = None) -> dict:
    """Train and evaluate the model described by ``cfg`` in ``run_dir``, resuming what is there.

    ``choices``: the config file chosen for each group (Hydra's), checked against the names in ``cfg``.
    The first process locks ``run_dir`` for the whole run; a second launch into it is refused.
    """
    for note in validate(cfg, choices):
        log.info("note: %s", note)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    main_process = launched_as_main()  # it alone holds the run folder's lock
    with runfiles.RunLock(run_dir) if main_process else contextlib.nullcontext():
        if main_process and runfiles.remove_leftovers(run_dir):
            log.info("removed the temp files of an interrupted write in %s", run_dir)
        state: RunState = previous_state(run_dir, resolved)
        if state.summary is not None:
            log.info("run %s is already %s; not training it again (delete %s to redo it)",
                     run_dir, state.summary["status"], runfiles.SUMMARY)
            return state.summary
        with PreemptionSignals() as signals:
            return train_run(cfg, run_dir, resolved, state, signals)


def all_finite(module: torch.nn.Module) -> bool:
    return all(torch.isfinite(t).all() for t in module.state_dict().values() if t.is_floating_point())


def train_run(cfg: DictConfig, run_dir: Path, resolved: dict, state: RunState, signals: PreemptionSignals) -> dict:
    procs, device = init_processes(cfg.device)
    try:
        return train_processes(cfg, run_dir, resolved, state, signals, procs, device)
    finally:
        shutdown(procs)


def train_processes(cfg, run_dir: Path, resolved: dict, state: RunState, signals: PreemptionSignals,
                    procs: Processes, device: torch.device) -> dict:
    """The run loop, as one of ``procs.world_size`` processes; only the first writes files."""
    main_process = procs.is_main
    if not main_process:
        log.setLevel(logging.WARNING)
    local_workers = workers_per_process(cfg.workers, procs)
    if cfg.norm.name == "bn" and cfg.norm.get("sync") and procs.distributed and device.type != "cuda":
        raise ConfigError("norm.sync=true across processes needs CUDA devices (SyncBatchNorm); drop it on CPU")
    if main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed, cfg.deterministic)
    splits = build_datasets(cfg.data, cfg.seed)
    images_per_step = cfg.batch * cfg.workers
    limit_train(splits, cfg.data, images_per_step)
    sampler = StepBatchSampler(len(splits.train), cfg.batch, cfg.workers, cfg.seed,
                               hosted=hosted_workers(cfg.workers, procs))
    if procs.distributed:  # each process evaluates every world_size-th image; the sums are combined
        splits.val = Subset(splits.val, range(procs.rank, len(splits.val), procs.world_size))
    train_loader, val_loader = build_loaders(splits, cfg.data, sampler, cfg.eval_batch)
    core = build_model(cfg, splits.num_classes, splits.in_channels, workers=local_workers)
    if cfg.get("init") and state.checkpoint is None:  # a resumed run takes its weights from last.pt
        finetune.initialize(core, cfg)
    core = core.to(device)
    if procs.rank > 0:  # identical weights everywhere, but each process its own augmentation stream
        seed_everything(cfg.seed + 1_000_003 * procs.rank, cfg.deterministic)
    model = wrap(core, procs, device)
    optimizer, lr = build_optimizer(core, cfg.optim, cfg.batch)
    scheduler = build_scheduler(optimizer, cfg.optim, lr, sampler.steps_per_epoch, cfg.epochs)

    history: list[dict] = []
    epoch, meter, epoch_lr = 1, None, lr
    if state.checkpoint is not None:
        ckpt = state.checkpoint
        try:
            core.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
        except (RuntimeError, KeyError, ValueError, TypeError) as err:  # another model's weights
            raise runfiles.DamagedFile(run_dir / runfiles.CHECKPOINT,
                                       f"does not fit this model: {str(err).splitlines()[0][:100]}") from None
        history, epoch, epoch_lr = ckpt["history"], ckpt["next_epoch"], ckpt["epoch_lr"]
        meter = restore_meter(ckpt["meter"], procs)
        if len(ckpt["rng"]) == procs.world_size:
            set_rng_state(ckpt["rng"][procs.rank])
        else:
            log.warning("the checkpoint holds random states for %d processes, not %d: data augmentation "
                        "continues from fresh streams", len(ckpt["rng"]), procs.world_size)
        log.info("resuming %s at epoch %d, step %d", run_dir, epoch, meter.steps if meter else 0)
    steps_done = (epoch - 1) * sampler.steps_per_epoch + (meter.steps if meter else 0)
    probe = attach_probe(core, cfg.get("probe") or {}, run_dir, cfg.seed, steps_done) if main_process else None

    if main_process:
        runfiles.write_text(run_dir / runfiles.CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
    name = str(run_dir.relative_to(run_dir.parents[1]))
    logger = build_logger(cfg.logger if main_process else OmegaConf.create({"name": "none"}), run_dir, name, resolved)
    log.info("run %s: %d train / %d val images, %d steps/epoch of %d images (%d workers x %d) on %d process(es), "
             "lr %.4g, on %s", name, len(splits.train), len(splits.val) * procs.world_size, sampler.steps_per_epoch,
             images_per_step, cfg.workers, cfg.batch, procs.world_size, lr, device)

    def save(next_epoch: int, partial: EpochMeter | None) -> None:
        """Checkpoint (every process takes part; the first writes)."""
        average_bn_buffers(core, procs)
        if not all_finite(core):  # never replace the last good checkpoint with a diverged one
            raise DivergedError(f"the weights became non-finite at epoch {epoch}, step {partial.steps if partial else 0}")
        rngs = gather(rng_state(), procs)
        meters = gather(partial.state_dict(), procs) if partial else None
        if probe is not None:
            probe.flush()
        if main_process:
            runfiles.save_checkpoint(run_dir / runfiles.CHECKPOINT, {
                "next_epoch": next_epoch, "meter": meters, "epoch_lr": epoch_lr,
                "history": history, "model": core.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": rngs, "config": resolved,
            })

    def on_step(m: EpochMeter) -> None:
        if any_process(signals.received is not None, procs):
            save(epoch, m)
            raise Preempted(signals.received or signal.SIGTERM, epoch, m.steps)
        if cfg.checkpoint_steps and m.steps % cfg.checkpoint_steps == 0:
            save(epoch, m)

    try:
        while epoch <= cfg.epochs:
            sampler.set_epoch(epoch, start_step=meter.steps if meter else 0)
            set_epoch(splits.train, epoch)
            if meter is None:
                epoch_lr = optimizer.param_groups[0]["lr"]
            row = {"epoch": epoch, "lr": epoch_lr}
            row.update(combine_train(train_one_epoch(model, train_loader, optimizer, scheduler, device, epoch=epoch,
                                                     progress=cfg.progress and main_process, meter=meter,
                                                     on_step=on_step), procs))
            eval_start = time.perf_counter()
            average_bn_buffers(core, procs)

            def precise_batches():  # precise BN: this epoch's first K steps, from its start
                sampler.set_epoch(epoch)
                return itertools.islice(train_loader, cfg.norm.precise_batches)

            with evaluation_statistics(core, cfg.norm, precise_batches, device):
                row.update(combine_eval(evaluate(core, val_loader, device), len(splits.val), procs))
            row["epoch_seconds"] = row["train_seconds"] + time.perf_counter() - eval_start
            row["images_per_s"] = row["train_images"] / row["train_seconds"]
            history.append(row)
            if main_process:
                runfiles.write_jsonl(run_dir / runfiles.METRICS, history)
            logger.log({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
            epoch, meter = epoch + 1, None
            save(epoch, None)
            log.info("epoch %d/%d  lr %.4g  train loss %.4f  train err %.2f%%  val err %.2f%%  %.0f img/s",
                     row["epoch"], cfg.epochs, row["lr"], row["train_loss"], row["train_error"],
                     row["val_error"], row["images_per_s"])
    except DivergedError as err:
        failed = summarize(cfg, history, "failed", device, lr=lr, reason=str(err),
                           skipped_images=splits.skipped_images, processes=procs.world_size)
        if main_process:
            runfiles.write_json(run_dir / runfiles.SUMMARY, failed)
        logger.finish()
        kept = (f"last good checkpoint kept in {run_dir}" if (run_dir / runfiles.CHECKPOINT).exists()
                else "no checkpoint was saved before it")
        raise DivergedError(f"{err}; run marked failed, {kept}; lower optim.base_lr or check the data") from err

    summary = summarize(cfg, history, "complete", device, lr=lr, skipped_images=splits.skipped_images,
                        processes=procs.world_size)
    if main_process:
        runfiles.write_json(run_dir / runfiles.SUMMARY, summary)
    logger.finish()
    log.info("final error (median of last %d epochs): %.2f%%  -> %s",
             summary["final_epochs"], summary["final_error"], run_dir)
    return summary


HYDRA_ONLY = {".hydra", "train.log", runfiles.LOCK}  # what is in a run folder before the run writes anything


def discard_if_unused(run_dir: Path) -> None:
    """Remove a run folder that holds only what Hydra put there, so a rejected config leaves nothing."""
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= HYDRA_ONLY:
        shutil.rmtree(run_dir, ignore_errors=True)
        cwd, parent = Path.cwd().resolve(), run_dir.resolve().parent
        try:
            while parent != cwd and cwd in parent.parents and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent
        except OSError:  # another process of the same run removed it first
            pass


@hydra.main(version_base="1.3", config_path=str(CONFIGS), config_name="train")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        return run(cfg, run_dir, OmegaConf.to_container(hydra_cfg.runtime.choices))["final_error"]
    except (ConfigError, DivergedError, Preempted) as err:
        if isinstance(err, ConfigError):
            discard_if_unused(run_dir)
        if cfg.get("debug") is True:
            raise
        if isinstance(err, Preempted):
            print(f"gnrepro: stopped: {err}", file=sys.stderr)
        else:
            print(error_line(err), file=sys.stderr)
        sys.exit(EXIT_STOPPED if isinstance(err, Preempted) else EXIT_USER if isinstance(err, ConfigError) else EXIT_FAILED)


def cli() -> None:
    """Check the command line and every job's config before Hydra creates any folder, then run."""
    try:
        check_command_line(sys.argv[1:])
        check_jobs(sys.argv[1:], locks=launched_as_main())  # other ranks join the folder rank 0 has locked
    except ConfigError as err:
        if getattr(err, "debug", False):
            raise
        print(error_line(err), file=sys.stderr)
        sys.exit(EXIT_USER)
    main()


if __name__ == "__main__":
    # Launchers that pickle the task (joblib, submitit) need it importable by reference, not from __main__.
    from gnrepro.train import cli as importable_cli

    importable_cli()
