"""The real thing, once, in the quick loop: ``python -m gnrepro.train`` trains a tiny run end to end,
a SIGTERM stops a copy of it part-way and a relaunch finishes it bitwise equal, and torchrun with 2
processes gives the same run as one process hosting both workers.

Each is seconds at this size (ResNet-14 at the paper's widths, 10 px digits, 2 steps per epoch), so
a change that breaks the entry point, resuming or the distributed path fails where developers look,
not only in the slow suite. The larger versions of these (SIGKILL, NaN, GN under torchrun, more
steps) stay in tests/runs/test_resume.py and tests/engine/test_distributed.py.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gnrepro import runfiles

# 2 workers x 4 images, 16 train images: 2 optimizer steps per epoch; 90 val images (the smallest split
# the schema allows keeps evaluation, the bulk of such a run, short); 6 epochs, so "the median of the
# final 5 epochs" has a sixth epoch to leave out. BN: per-worker statistics are what differ most
# between one process and two. (At 2 images per worker and 8 px, the last stage's BN sees 2 values
# per channel and float rounding between one process and two grows to 1e-1 within 12 steps: too
# ill-conditioned for an equality test; 4 images at 10 px stay within 1e-5.)
ARGS = ("model=resnet14", "norm=bn", "batch=4", "workers=2", "epochs=6", "data.subset=16", "data.image_size=10",
        "data.val_fraction=0.05", "eval_batch=512", "deterministic=true", "progress=false",
        "keep_checkpoint=last")  # the tests compare the optimizer's state too, not only the weights
RUN = Path("digits_resnet14/bn_b4x2_e6_s0_sub16")
TIMING = ("train_seconds", "epoch_seconds", "images_per_s")


def env() -> dict:
    return {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}


def train_cmd(nproc: int = 1) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "gnrepro.train"]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "gnrepro.train"]


def launch(cwd: Path, *overrides: str, nproc: int = 1) -> subprocess.CompletedProcess:
    return subprocess.run([*train_cmd(nproc), *ARGS, *overrides], cwd=cwd, env=env(), capture_output=True,
                          text=True, timeout=600)


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The run, trained in one go by one process: the reference the other tests compare with."""
    cwd = tmp_path_factory.mktemp("straight")
    proc = launch(cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd / "outputs/runs" / RUN


def test_cli_trains_a_tiny_run_and_reports_the_median_of_its_final_5_epochs(straight):
    config = runfiles.read_config(straight / "config.yaml")
    assert (config["norm"]["name"], config["batch"], config["workers"], config["epochs"]) == ("bn", 4, 2, 6)
    rows = runfiles.read_jsonl(straight / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[0]["lr"] == pytest.approx(0.1 * 4 / 32, rel=1e-12)  # per-worker linear scaling, no warm-up below 0.1
    assert all(r["train_images"] == 16 for r in rows)  # 2 steps x 2 workers x 4 images
    summary = runfiles.read_summary(straight)
    assert summary["status"] == "complete" and summary["epochs_done"] == 6
    errors = [r["val_error"] for r in rows]
    assert summary["val_errors"] == errors
    # the reported number, recomputed from the per-epoch file: the middle of the final 5 epochs' errors
    assert summary["final_error"] == sorted(errors[-5:])[2]
    ckpt = runfiles.load_checkpoint(straight / "last.pt")
    assert ckpt["next_epoch"] == 7 and ckpt["meter"] is None


def test_sigterm_mid_run_then_relaunch_gives_the_same_run_bitwise(straight, tmp_path):
    proc = subprocess.Popen([*train_cmd(), *ARGS], cwd=tmp_path, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    log = tmp_path / "outputs/runs" / RUN / "train.log"
    deadline = time.monotonic() + 300
    # the trainer logs this line after installing its signal handlers, just before the first step
    while not (log.exists() and "steps/epoch" in log.read_text()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 3, f"the run ended with {proc.returncode} instead of stopping on SIGTERM: {err[-2000:]}"
    assert err.strip().splitlines()[-1].startswith("gnrepro: stopped: SIGTERM received: checkpoint saved"), err
    stopped = runfiles.load_checkpoint(log.parent / "last.pt")
    assert stopped["next_epoch"] <= 6 and not (log.parent / "summary.json").exists()

    resumed = launch(tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout + resumed.stderr
    a, b = runfiles.load_checkpoint(straight / "last.pt"), runfiles.load_checkpoint(log.parent / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    different = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not different, different
    assert without_timing(runfiles.read_jsonl(straight / "metrics.jsonl")) == \
        without_timing(runfiles.read_jsonl(log.parent / "metrics.jsonl"))
    assert runfiles.read_summary(straight)["final_error"] == runfiles.read_summary(log.parent)["final_error"]


def test_torchrun_two_processes_equal_one_process_hosting_both_workers(straight, tmp_path):
    proc = launch(tmp_path, nproc=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = tmp_path / "outputs/runs" / RUN
    a, b = runfiles.load_checkpoint(straight / "last.pt"), runfiles.load_checkpoint(two / "last.pt")
    # Same images per worker, per-worker BN statistics in both, running statistics averaged over the
    # workers in both: only float summation order differs (gloo's all-reduce vs one process's sum).
    worst = max((a["model"][k].double() - b["model"][k].double()).abs().max().item() for k in a["model"])
    assert worst <= 1e-5, worst
    ra, rb = runfiles.read_jsonl(straight / "metrics.jsonl"), runfiles.read_jsonl(two / "metrics.jsonl")
    assert [r["train_images"] for r in rb] == [16] * 6  # both processes' images counted once
    for x, y in zip(ra, rb):
        assert x["train_loss"] == pytest.approx(y["train_loss"], abs=1e-5)
        assert x["val_error"] == pytest.approx(y["val_error"], abs=1e-9)  # every val image counted once
    assert runfiles.read_summary(two)["processes"] == 2
