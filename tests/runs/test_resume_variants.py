"""Issue 27, item 4: resuming is bitwise under ``deterministic=true`` for the runs that carry state
beyond the weights and the optimizer: fp16 (the GradScaler's scale and growth tracker), the probe
(its own random positions and its file), precise BN (statistics recomputed from training batches
before each evaluation), and a 2-process torchrun run (each process's augmentation stream).

Each test trains the run straight through once, then a copy that is stopped by SIGTERM right after
its first step (the trainer logs "steps/epoch" after installing its handlers, just before the first
step: the stop lands mid-epoch; under torchrun the processes agree on it at the next read point,
here the end of epoch 1 of 3, which before this test's fix never came), relaunches it, and compares
the two runs' final ``last.pt`` tensor by tensor (weights, buffers, optimizer and scaler state, the
Python, NumPy and torch RNG states), their per-epoch metrics and (for
the probe) their probe records. The reference is the straight run, not a stored number. Wrong
variants each rejects: a scaler restarted at its initial scale (fp16 skips a different set of
steps), a probe whose sampling generator restarts or whose file is rewritten/duplicated on resume,
precise BN computed from a different set of batches after resuming, one process of two restored
from the other's RNG state or the resumed run re-seeding its data order.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gnrepro import runfiles
from tests.test_real_runs import env, train_cmd, without_timing

# 16 images, 2 workers x 4: 2 steps per epoch; 3 epochs; 90 val images.
BASE = ("model=resnet14", "batch=4", "workers=2", "epochs=3", "data.subset=16", "data.image_size=10",
        "data.val_fraction=0.05", "eval_batch=512", "deterministic=true", "progress=false", "keep_checkpoint=last")


def command(nproc: int) -> list[str]:
    """The trainer, or (nproc > 1) gnrepro's torchrun wrapper (torchrun's options and behaviour, one
    line per failure, the stopped process's exit code)."""
    if nproc == 1:
        return train_cmd(1)
    return [sys.executable, "-m", "gnrepro.torchrun", "--standalone", f"--nproc_per_node={nproc}", "-m", "gnrepro.train"]


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (torchrun's training processes), from /proc."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def launch(cwd: Path, args, nproc: int = 1) -> subprocess.CompletedProcess:
    return subprocess.run([*command(nproc), *args], cwd=cwd, env=env(), capture_output=True, text=True,
                          timeout=900)


def stop_after_first_step(cwd: Path, args, run: Path, nproc: int = 1) -> None:
    proc = subprocess.Popen([*command(nproc), *args], cwd=cwd, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    log = cwd / "outputs/runs" / run / "train.log"
    deadline = time.monotonic() + 600
    while not (log.exists() and "steps/epoch" in log.read_text()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.02)
    if nproc == 1:
        proc.send_signal(signal.SIGTERM)
    else:
        # a scheduler's preemption signals every training process (SLURM: every task of the step); the
        # processes agree to stop after the same step and the launcher reports the stop (exit 3)
        workers = children(proc.pid)
        assert len(workers) == nproc, workers
        for pid in workers:
            os.kill(pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode != 0, "the run finished before the signal: nothing was resumed"
    assert "SIGTERM received: checkpoint saved" in err, err[-3000:]
    stopped = runfiles.load_checkpoint(log.parent / "last.pt")
    assert stopped["next_epoch"] <= 3 and not (log.parent / "summary.json").exists()


def tensors(obj, prefix=""):
    """Every tensor and plain value in a (nested) checkpoint, by path; timing left out."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k in ("config", "history") or k in ("train_seconds", "epoch_seconds", "images_per_s"):
                continue
            out.update(tensors(v, f"{prefix}{k}."))
        return out
    if isinstance(obj, (list, tuple)):
        out = {}
        for i, v in enumerate(obj):
            out.update(tensors(v, f"{prefix}{i}."))
        return out
    return {prefix: obj}


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_same_run(a: Path, b: Path, files=()) -> dict:
    ca, cb = runfiles.load_checkpoint(a / "last.pt"), runfiles.load_checkpoint(b / "last.pt")
    # Everything, the global torch RNG state included: a relaunch that resumed mid-epoch used to end 2
    # Mersenne-Twister words further on (one more DataLoader iterator, whose base seed came from the
    # global RNG); with data.num_workers=0 on ImageNet that shifted every later crop (the test below).
    ta, tb = tensors(ca), tensors(cb)
    assert ta.keys() == tb.keys(), set(ta) ^ set(tb)
    different = [k for k in ta if not (torch.equal(ta[k], tb[k]) if torch.is_tensor(ta[k]) else ta[k] == tb[k])]
    assert not different, different[:10]
    assert without_timing(runfiles.read_jsonl(a / "metrics.jsonl")) == without_timing(runfiles.read_jsonl(b / "metrics.jsonl"))
    for name in files:  # other per-step records (the probe's), line by line
        assert jsonl(a / name) == jsonl(b / name), name
    assert runfiles.read_summary(a)["final_error"] == runfiles.read_summary(b)["final_error"]
    return ca


def straight_and_resumed(tmp_path, args, run=None, nproc=1):
    """The straight run and the stopped-and-relaunched one (``run``: the expected folder; None: the one
    folder the straight run made)."""
    (tmp_path / "straight").mkdir()
    (tmp_path / "resumed").mkdir()
    proc = launch(tmp_path / "straight", args, nproc)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if run is None:
        (folder,) = (tmp_path / "straight/outputs/runs").glob("*/*/summary.json")
        run = folder.parent.relative_to(tmp_path / "straight/outputs/runs")
    stop_after_first_step(tmp_path / "resumed", args, run, nproc)
    proc = launch(tmp_path / "resumed", args, nproc)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming" in proc.stdout + proc.stderr
    return tmp_path / "straight/outputs/runs" / run, tmp_path / "resumed/outputs/runs" / run


@pytest.mark.slow  # fp16 convolutions on the CPU are slow: about a minute a run here
def test_fp16_resume_is_bitwise_with_the_loss_scalers_state(tmp_path):
    args = (*BASE, "norm=gn", "precision=fp16")
    a, b = straight_and_resumed(tmp_path, args, Path("digits_resnet14/gn32_b4x2_e3_s0_sub16_fp16"))
    ckpt = assert_same_run(a, b)
    scaler = ckpt["scaler"]
    # the scaler really carried state: it started at 2**16 and backed off on overflowing steps, so a
    # resumed run that restarted it at 2**16 would skip other steps (or none) and end elsewhere
    assert scaler is not None and scaler["scale"] < 2.0 ** 16, scaler


@pytest.mark.slow
def test_probe_and_precise_bn_resume_is_bitwise(tmp_path):
    # one run with both: the probe's sampling of layer4's responses (its own random positions) and
    # precise BN's statistics over 2 training batches before each evaluation
    args = (*BASE, "norm=bn", "norm.eval_stats=precise", "norm.precise_batches=2", "probe.every_steps=1",
            "probe.layer=layer4", "probe.samples=64")
    a, b = straight_and_resumed(tmp_path, args)
    assert_same_run(a, b, files=("probe.jsonl",))
    rows = jsonl(b / "probe.jsonl")
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps)) and len(steps) == 6, steps  # every step recorded once: none lost, none twice


@pytest.mark.slow
def test_two_process_torchrun_resume_is_bitwise(tmp_path):
    args = (*BASE, "norm=bn")
    a, b = straight_and_resumed(tmp_path, args, Path("digits_resnet14/bn_b4x2_e3_s0_sub16"), nproc=2)
    assert runfiles.read_summary(b)["processes"] == 2
    assert_same_run(a, b)


def test_processes_agree_on_a_signal_at_an_epochs_last_step(monkeypatch):
    """The rule the torchrun test above needs, in the quick loop: with several processes, a signal is
    acted on at a read point only (one collective there, none at other steps), and an epoch's last
    step is one even when the epoch is shorter than log_every. Rejects the old rule (log_every steps
    and checkpoints only), under which a 2-step epoch never stopped."""
    import types

    from gnrepro import train
    from gnrepro.engine.preemption import Preempted

    collectives, saved = [], []
    monkeypatch.setattr(train, "any_process", lambda flag, procs: collectives.append(flag) or flag)
    run = types.SimpleNamespace(
        cfg=types.SimpleNamespace(checkpoint_steps=0, log_every=50), signals=types.SimpleNamespace(received=signal.SIGTERM),
        procs=types.SimpleNamespace(distributed=True), parts=types.SimpleNamespace(sampler=types.SimpleNamespace(steps_per_epoch=2)),
        epoch=1, save=lambda epoch, meter: saved.append(epoch))
    sums = types.SimpleNamespace(meter=types.SimpleNamespace(steps=1), read=lambda: None)
    train.RunLoop.on_step(run, sums)  # step 1 of 2: no read point, so no collective and no stop
    assert collectives == [] and saved == []
    sums.meter.steps = 2
    with pytest.raises(Preempted):
        train.RunLoop.on_step(run, sums)
    assert collectives == [True] and saved == [1]


@pytest.mark.slow
def test_imagenet_resume_with_crops_drawn_in_the_main_process_is_bitwise(tmp_path):
    """data.num_workers=0: RandomResizedCrop and the flip draw from the global torch RNG, which the
    checkpoint saves and the relaunch restores. Rejects anything that draws from the global RNG on
    the way back in (a DataLoader iterator draws its base seed from it: the relaunch creates one
    more than the straight run), which shifts every later crop."""
    from gnrepro.data.fake import make_imagenet

    root = make_imagenet(tmp_path / "inet", classes=2, train_per_class=8, val_per_class=2, size=(40, 32))
    args = ("model=resnet14", "norm=gn", "batch=4", "workers=2", "epochs=2", "data=imagenet", f"data.root={root}",
            "data.train_crop=16", "data.eval_resize=16", "data.eval_crop=16", "data.num_workers=0", "device=cpu",
            "eval_batch=512", "deterministic=true", "progress=false", "keep_checkpoint=last")
    a, b = straight_and_resumed(tmp_path, args)
    assert_same_run(a, b)  # the global torch RNG state included: here it is the crops' source


def test_starting_the_trainers_loaders_draws_nothing_from_the_global_rng(tmp_path):
    """The quick-loop form of the test above: creating an iterator over the train or val loader leaves
    the global torch RNG (the crops' source with data.num_workers=0) where it was. Rejects loaders
    without a generator of their own (torch then draws each iterator's base seed from the global RNG)."""
    from gnrepro.data import build_datasets, build_loaders, fake
    from gnrepro.data.sampling import StepBatchSampler
    from tests.data.test_data_loaders import data_cfg

    fake.make_imagenet(tmp_path)
    cfg = data_cfg(tmp_path, "pil")
    splits = build_datasets(cfg)
    train, val = build_loaders(splits, cfg, StepBatchSampler(len(splits.train), 4, 1, seed=0), eval_batch=3)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    iter(train), iter(val)
    assert torch.equal(before, torch.get_rng_state())
