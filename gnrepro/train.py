"""Train one model under the paper's protocol (Sec. 4.1): ``python -m gnrepro.train norm=gn batch=2``.

The run's result is the median top-1 validation error of the final 5 epochs, as reported in the
paper. Everything the run produces lands in one folder named by its settings (see
``gnrepro.runs.identity.run_name``): the resolved config, one JSON line of metrics per epoch, the
summary and the last checkpoint.

Runs survive interruption: relaunching the same command resumes from ``last.pt`` (model,
optimizer, schedule, epoch and step, RNG states; the data order is a function of seed and epoch),
a finished or failed run is not trained again, SIGTERM/SIGINT/SIGHUP/SIGUSR1/SIGUSR2 save a checkpoint
at the next step and stop (exit 3; before training starts they end the launch in one line), and a non-finite loss stops the run and marks it failed.
"""
from __future__ import annotations

if __name__ == "__main__":  # before the imports below (seconds): a signal now ends the launch in one line
    import os as _os
    import signal as _signal

    def _stopped_while_importing(signum, frame):
        _os.write(2, f"gnrepro: stopped: {_signal.Signals(signum).name} received while starting; nothing was "
                     f"written; relaunch the same command\n".encode())
        _os._exit(3)  # gnrepro.errors.EXIT_STOPPED (not imported yet)

    for _sig in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGUSR1, _signal.SIGUSR2):
        if _signal.getsignal(_sig) is not _signal.SIG_IGN:  # nohup, or a background job's SIGINT: stay ignored
            _signal.signal(_sig, _stopped_while_importing)

import contextlib
import itertools
import logging
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Subset

from gnrepro.engine import checkpoint
from gnrepro.weights import finetune
from gnrepro import runfiles
from gnrepro.models.build import build_model
from gnrepro.engine.checkpoint import restore_meter, seed_everything  # noqa: F401  (restore_meter: used by tests)
from gnrepro.settings.validate import validate
from gnrepro.data import build_datasets, build_loaders, limit_train, set_epoch
from gnrepro.engine.distributed import (Processes, any_process, average_bn_buffers, gather, hosted_workers, init_processes,
                                 launched_as_main, shutdown, sum_over_processes, workers_per_process, wrap)
from gnrepro.engine.loop import (DivergedError, EpochMeter, EpochSums, ProgressLines, evaluation_means, evaluation_sums,
                                 train_one_epoch)
from gnrepro.errors import EXIT_FAILED, EXIT_STOPPED, EXIT_USER, ConfigError, UserError, error_line
from gnrepro.engine.execution import Execution, build_execution
from gnrepro.engine.loggers import build_logger
from gnrepro.layers.norm_registry import norm_tag
from gnrepro.layers.precise_bn import evaluation_statistics
from gnrepro.engine.preemption import Interrupted, Preempted, PreemptionSignals, startup_signals
from gnrepro.resources import CONFIGS
from gnrepro.settings.preflight import check_command_line, check_jobs
from gnrepro.engine.probe import attach_probe
from gnrepro.runs.resume import RunState, previous_state
from gnrepro.data.sampling import StepBatchSampler
from gnrepro.engine.schedule import build_optimizer, build_scheduler
from gnrepro.settings.launcher import check_launcher
from gnrepro.text import plural

log = logging.getLogger("gnrepro")


def combine_train(meter: EpochMeter, procs: Processes) -> dict:
    """One epoch's training statistics over all processes (each saw its share of every step):
    the sums added once over processes, then divided."""
    loss_sum, wrong, seen = sum_over_processes([meter.loss_sum, meter.wrong, meter.seen], procs)
    return EpochMeter(loss_sum, int(wrong), int(seen), meter.steps, meter.seconds).summary()


def combine_eval(sums: dict, procs: Processes) -> dict:
    """Validation statistics over all processes' shards of the val split, from their sums."""
    loss_sum, wrong, seen = sum_over_processes([sums["loss_sum"], sums["wrong"], sums["seen"]], procs)
    return evaluation_means({"loss_sum": loss_sum, "wrong": wrong, "seen": seen})


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
    main_process = launched_as_main()  # it alone holds the run folder's lock
    with runfiles.RunLock(run_dir) if main_process else contextlib.nullcontext() as lock:
        had_config = (run_dir / runfiles.CONFIG).exists()
        try:
            for note in validate(cfg, choices):
                log.info("note: %s", note)
            resolved = OmegaConf.to_container(cfg, resolve=True)
            if main_process and runfiles.remove_leftovers(run_dir):
                log.info("removed the temp files of an interrupted write in %s", run_dir)
            state: RunState = previous_state(run_dir, resolved)
            if state.summary is not None:
                log.info("run %s is already %s; not training it again (delete %s to redo it)",
                         run_dir, state.summary["status"], runfiles.SUMMARY)
                return state.summary
            with PreemptionSignals() as signals:
                return train_run(cfg, run_dir, resolved, state, signals)
        except (UserError, Interrupted):
            # Issue 24: a rejected launch (bad data found at the first batch, a signal during start-up)
            # leaves nothing behind: the folder goes if it holds nothing a run made, and only while
            # this process holds its lock, so a launch refused the folder never touches it.
            if lock is not None:
                lock.discard(HYDRA_ONLY if had_config else HYDRA_ONLY | {runfiles.CONFIG})
            raise


def train_run(cfg: DictConfig, run_dir: Path, resolved: dict, state: RunState, signals: PreemptionSignals) -> dict:
    procs, device = init_processes(cfg.device)
    try:
        return train_processes(cfg, run_dir, resolved, state, signals, procs, device)
    finally:
        shutdown(procs)


@dataclass
class Parts:
    """What one process trains with, built from the config."""
    splits: object
    sampler: StepBatchSampler
    train_loader: object
    val_loader: object
    core: torch.nn.Module        # the plain model: checkpoints, evaluation, BN statistics
    model: torch.nn.Module       # what a training step calls: ``core`` wrapped by DDP and/or torch.compile
    optimizer: torch.optim.Optimizer
    scheduler: object
    execution: Execution
    lr: float


def build_parts(cfg, state: RunState, procs: Processes, device: torch.device) -> Parts:
    local_workers = workers_per_process(cfg.workers, procs)
    if cfg.norm.get("sync") and procs.distributed and device.type != "cuda":
        raise ConfigError("norm.sync=true across processes needs CUDA devices (SyncBatchNorm); drop it on CPU")
    seed_everything(cfg.seed, cfg.deterministic)
    splits = build_datasets(cfg.data, cfg.seed)
    limit_train(splits, cfg.data, cfg.batch * cfg.workers)
    sampler = StepBatchSampler(len(splits.train), cfg.batch, cfg.workers, cfg.seed,
                               hosted=hosted_workers(cfg.workers, procs))
    if procs.distributed:  # each process evaluates every world_size-th image; the sums are combined
        splits.val = Subset(splits.val, range(procs.rank, len(splits.val), procs.world_size))
    train_loader, val_loader = build_loaders(splits, cfg.data, sampler, cfg.eval_batch, device)
    core = build_model(cfg, splits.num_classes, splits.in_channels, workers=local_workers)
    if cfg.get("init") and state.checkpoint is None:  # a resumed run takes its weights from last.pt
        finetune.initialize(core, cfg)
    execution = build_execution(cfg, device)
    execution.place(core)
    if procs.rank > 0:  # identical weights everywhere, but each process its own augmentation stream
        seed_everything(cfg.seed + 1_000_003 * procs.rank, cfg.deterministic)
    model = execution.compile(wrap(core, procs, device))
    optimizer, lr = build_optimizer(core, cfg.optim, cfg.batch)
    scheduler = build_scheduler(optimizer, cfg.optim, lr, sampler.steps_per_epoch, cfg.epochs)
    return Parts(splits, sampler, train_loader, val_loader, core, model, optimizer, scheduler, execution, lr)


@dataclass
class RunLoop:
    """One process's run loop: the state a checkpoint holds (history, the next epoch, its LR, the
    partial epoch's meter) and the three things done with it (checkpoint, react to a step, finish).
    Kept on an object rather than in closures over the loop's variables, so a checkpoint always saves
    the state of the moment it is taken."""
    cfg: DictConfig
    run_dir: Path
    resolved: dict
    parts: Parts
    procs: Processes
    signals: PreemptionSignals
    device: torch.device
    history: list = field(default_factory=list)
    epoch: int = 1
    epoch_lr: float = 0.0
    meter: EpochMeter | None = None  # the interrupted epoch's sums, when resuming mid-epoch
    probe: object = None
    logger: object = None

    def save(self, next_epoch: int, partial: EpochMeter | None) -> None:
        """Checkpoint (every process takes part; the first writes). ``partial``: the true sums, just read."""
        p = self.parts
        average_bn_buffers(p.core, self.procs)
        if not checkpoint.all_finite(p.core):  # never replace the last good checkpoint with a diverged one
            raise DivergedError(f"the weights became non-finite at epoch {self.epoch}, "
                                f"step {partial.steps if partial else 0}")
        rngs = gather(checkpoint.rng_state(), self.procs)
        meters = gather(partial.state_dict(), self.procs) if partial else None
        if self.probe is not None:
            self.probe.flush()
        if self.procs.is_main:
            runfiles.save_checkpoint(self.run_dir / runfiles.CHECKPOINT, checkpoint.build(
                next_epoch=next_epoch, meters=meters, epoch_lr=self.epoch_lr, history=self.history, model=p.core,
                optimizer=p.optimizer, scheduler=p.scheduler, scaler=p.execution.scaler, rngs=rngs, config=self.resolved))

    def on_step(self, sums: EpochSums) -> None:
        """Checkpoint every ``checkpoint_steps``; on a preemption signal checkpoint and stop. Several
        processes agree on the signal only at read points (every ``log_every`` steps, checkpoints, and
        an epoch's last step), so no step waits for the others; one process acts at once. (Without the
        epoch's last step, a run whose epochs have fewer than ``log_every`` steps never stopped on a
        signal under torchrun: it trained on until the scheduler's SIGKILL.)"""
        steps = sums.meter.steps
        due = bool(self.cfg.checkpoint_steps) and steps % self.cfg.checkpoint_steps == 0
        stop = self.signals.received is not None
        if self.procs.distributed:
            read_point = due or steps % self.cfg.log_every == 0 or steps == self.parts.sampler.steps_per_epoch
            stop = read_point and any_process(stop, self.procs)
        if stop:
            self.save(self.epoch, sums.read())
            raise Preempted(self.signals.received or signal.SIGTERM, self.epoch, steps)
        if due:
            self.save(self.epoch, sums.read())

    def finish(self, status: str, **extra) -> dict:
        """Write the run's summary (``complete`` or ``failed``) and close the logger."""
        summary = summarize(self.cfg, self.history, status, self.device, lr=self.parts.lr,
                            skipped_images=self.parts.splits.skipped_images, processes=self.procs.world_size, **extra)
        if self.procs.is_main:  # the policy's files first, the summary that makes the run complete, then the rest goes
            keep = self.cfg.keep_checkpoint if status == "complete" else "last"  # a failed run keeps its last good last.pt
            checkpoint.save_final_weights(self.run_dir, keep, self.parts.core, self.resolved)
            runfiles.write_json(self.run_dir / runfiles.SUMMARY, summary)
            checkpoint.drop_resume_state(self.run_dir, keep)
        self.logger.finish()
        return summary


def train_processes(cfg, run_dir: Path, resolved: dict, state: RunState, signals: PreemptionSignals,
                    procs: Processes, device: torch.device) -> dict:
    """The run loop, as one of ``procs.world_size`` processes; only the first writes files."""
    main_process = procs.is_main
    if not main_process:
        log.setLevel(logging.WARNING)
    if main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
    p = build_parts(cfg, state, procs, device)
    run = RunLoop(cfg, run_dir, resolved, p, procs, signals, device, epoch_lr=p.lr)
    if state.checkpoint is not None:
        run.history, run.epoch, run.epoch_lr, run.meter = checkpoint.restore(
            state.checkpoint, run_dir / runfiles.CHECKPOINT, procs, model=p.core, optimizer=p.optimizer,
            scheduler=p.scheduler, scaler=p.execution.scaler)
        log.info("resuming %s at epoch %d, step %d", run_dir, run.epoch, run.meter.steps if run.meter else 0)
    steps_done = (run.epoch - 1) * p.sampler.steps_per_epoch + (run.meter.steps if run.meter else 0)
    run.probe = attach_probe(p.core, cfg.get("probe") or {}, run_dir, cfg.seed, steps_done) if main_process else None

    if main_process:
        runfiles.write_text(run_dir / runfiles.CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
    name = str(run_dir.relative_to(run_dir.parents[1]))
    run.logger = build_logger(cfg.logger if main_process else OmegaConf.create({"name": "none"}), run_dir, name, resolved)
    log.info("run %s: %d train / %d val images, %d steps/epoch of %d images (%s x %d) on %s, lr %.4g, on %s",
             name, len(p.splits.train), len(p.splits.val) * procs.world_size, p.sampler.steps_per_epoch,
             cfg.batch * cfg.workers, plural(cfg.workers, "worker"), cfg.batch,
             plural(procs.world_size, "process", "processes"), p.lr, device)
    # off a terminal (SLURM, nohup) the progress bar is hidden: log a line now and then instead
    lines = (ProgressLines(cfg.progress_seconds, cfg.epochs, p.sampler.steps_per_epoch)
             if main_process and not sys.stdout.isatty() else None)

    try:
        while run.epoch <= cfg.epochs:
            epoch = run.epoch
            p.sampler.set_epoch(epoch, start_step=run.meter.steps if run.meter else 0)
            set_epoch(p.splits.train, epoch)
            if run.meter is None:
                run.epoch_lr = p.optimizer.param_groups[0]["lr"]
            row = {"epoch": epoch, "lr": run.epoch_lr}
            done = train_one_epoch(p.model, p.train_loader, p.optimizer, p.scheduler, device, epoch=epoch,
                                   progress=cfg.progress and main_process, meter=run.meter, on_step=run.on_step,
                                   log_every=cfg.log_every, execution=p.execution,
                                   any_process=lambda flag: any_process(flag, procs), lines=lines)
            row.update(combine_train(done, procs))
            eval_start = time.perf_counter()
            row.update(evaluate_epoch(cfg, p, epoch, procs))
            row["epoch_seconds"] = row["train_seconds"] + time.perf_counter() - eval_start
            row["images_per_s"] = row["train_images"] / row["train_seconds"]
            run.history.append(row)
            if main_process:
                runfiles.write_jsonl(run_dir / runfiles.METRICS, run.history)
            run.logger.log({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
            run.epoch, run.meter = epoch + 1, None
            run.save(run.epoch, None)
            log.info("epoch %d/%d  lr %.4g  train loss %.4f  train err %.2f%%  val err %.2f%%  %.0f img/s",
                     row["epoch"], cfg.epochs, row["lr"], row["train_loss"], row["train_error"],
                     row["val_error"], row["images_per_s"])
    except DivergedError as err:
        run.finish("failed", reason=str(err))
        kept = (f"last good checkpoint kept in {run_dir}" if (run_dir / runfiles.CHECKPOINT).exists()
                else "no checkpoint was saved before it")
        raise DivergedError(f"{err}; run marked failed, {kept}; lower optim.base_lr or check the data") from err

    summary = run.finish("complete")
    log.info("final error (median of the last %s): %.2f%%  -> %s",
             plural(summary["final_epochs"], "epoch"), summary["final_error"], run_dir)
    return summary


def evaluate_epoch(cfg, p: Parts, epoch: int, procs: Processes) -> dict:
    """The epoch's validation statistics over all processes, with BN's evaluation statistics
    (running averages averaged over processes, or precise BN) and in the run's precision."""
    average_bn_buffers(p.core, procs)

    def precise_batches():  # precise BN: this epoch's first K steps, from its start
        p.sampler.set_epoch(epoch)
        return itertools.islice(p.train_loader, cfg.norm.precise_batches)

    with evaluation_statistics(p.core, cfg.norm, precise_batches, p.execution.device), p.execution.autocast():
        return combine_eval(evaluation_sums(p.core, p.val_loader, p.execution.device), procs)


HYDRA_ONLY = frozenset({".hydra", "train.log", runfiles.LOCK})  # in a run folder before the run writes anything


def to_log_file(line: str) -> None:
    """Append ``line`` to the run's train.log (Hydra's file handler) but not to the console, where it
    was just printed to stderr: why a run stopped (preempted, diverged, a damaged file) must be in
    the log a SLURM user reads afterwards, not only in a terminal that may be gone."""
    record = logging.LogRecord("gnrepro", logging.ERROR, __file__, 0, line, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


@hydra.main(version_base="1.3", config_path=str(CONFIGS), config_name="train")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        return run(cfg, run_dir, OmegaConf.to_container(hydra_cfg.runtime.choices))["final_error"]
    except (UserError, DivergedError, Preempted) as err:
        if cfg.get("debug") is True:
            raise
        line = f"gnrepro: stopped: {err}" if isinstance(err, Preempted) else error_line(err)
        print(line, file=sys.stderr)
        if not isinstance(err, UserError) or run_dir.is_dir():
            to_log_file(line)
        sys.exit(EXIT_STOPPED if isinstance(err, Preempted) else EXIT_USER if isinstance(err, UserError) else EXIT_FAILED)


def multirun_first(argv: list[str]) -> list[str]:
    """``-m``/``--multirun`` anywhere on the line, moved in front of the overrides, where Hydra's
    parser expects it (after them it prints its usage block)."""
    flags = [a for a in argv if a in ("-m", "--multirun")]
    return (["-m"] if flags else []) + [a for a in argv if a not in ("-m", "--multirun")]


def cli() -> None:
    """Check the command line and every job's config, and lock every job's folder, before Hydra
    creates anything; then run. A signal before training starts ends the launch in one line."""
    sys.argv = [sys.argv[0], *multirun_first(sys.argv[1:])]
    with startup_signals():
        try:
            check_command_line(sys.argv[1:])
            # rank 0 locks the folders (others join the folder rank 0 has locked); jobs of another
            # launcher run in other processes and lock their folder there
            check_jobs(sys.argv[1:], locks=launched_as_main(), hold=not uses_own_launcher(sys.argv[1:]))
            check_launcher(sys.argv[1:])  # hydra/launcher=slurm: would SLURM take the jobs? (sbatch --test-only)
        except UserError as err:
            runfiles.release_unused_locks()
            if getattr(err, "debug", False):
                raise
            print(error_line(err), file=sys.stderr)
            sys.exit(EXIT_USER)
        except Interrupted as stop:
            runfiles.release_unused_locks()
            print(f"gnrepro: stopped: {stop}", file=sys.stderr)
            sys.exit(EXIT_STOPPED)
        try:
            main()
        except Interrupted as stop:
            print(f"gnrepro: stopped: {stop}", file=sys.stderr)
            sys.exit(EXIT_STOPPED)
        finally:
            runfiles.release_unused_locks()


def uses_own_launcher(argv: list[str]) -> bool:
    """A ``hydra/launcher=`` other than Hydra's basic one (jobs in other processes or machines)."""
    return any(a.split("=", 1)[0].lstrip("+~") == "hydra/launcher" and a.split("=", 1)[-1] not in ("basic", "")
               for a in argv)


if __name__ == "__main__":
    # Launchers that pickle the task (joblib, submitit) need it importable by reference, not from __main__.
    from gnrepro.train import cli as importable_cli

    importable_cli()
