"""torch.distributed (gloo, 2 processes) equals the one-process per-worker emulation."""
import os
import subprocess
import sys

import pytest
import torch

from gnrepro.engine.distributed import Processes, hosted_workers, workers_per_process
from gnrepro.errors import ConfigError
from gnrepro.runs.identity import protocol_hash
from gnrepro.data.sampling import StepBatchSampler

BASE = ("batch=4", "workers=2", "epochs=1", "data.subset=32", "data.image_size=10", "deterministic=true",
        "progress=false", "eval_batch=512", "keep_checkpoint=last")  # 4 optimizer steps of 8 images; the tests read last.pt


def launch(tmp_path, nproc, *overrides):
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    head = [sys.executable, "-m", "gnrepro.train"]
    if nproc > 1:
        head = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "-m", "gnrepro.train"]
    return subprocess.run([*head, *BASE, *overrides], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)


def final_state(tmp_path, results_dir, run):
    ckpt = torch.load(tmp_path / results_dir / "digits_resnet50" / run / "last.pt", weights_only=True)
    return ckpt["model"], ckpt["history"]


def max_diff(a, b, only=lambda k: True):
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if only(k))


@pytest.mark.slow
@pytest.mark.parametrize("norm,run", [("bn", "bn_b4x2_e1_s0_sub32"), ("gn", "gn32_b4x2_e1_s0_sub32")])
def test_two_processes_equal_one_process_with_two_workers(tmp_path, norm, run):
    one = launch(tmp_path, 1, f"norm={norm}", "results_dir=one")
    two = launch(tmp_path, 2, f"norm={norm}", "results_dir=two")
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    (a, hist_a), (b, hist_b) = final_state(tmp_path, "one", run), final_state(tmp_path, "two", run)
    assert max_diff(a, b) <= 1e-5, max_diff(a, b)
    if norm == "bn":
        assert max_diff(a, b, lambda k: "running" in k) <= 1e-5
    assert hist_a[0]["train_loss"] == pytest.approx(hist_b[0]["train_loss"], abs=1e-5)
    assert hist_a[0]["val_error"] == pytest.approx(hist_b[0]["val_error"], abs=1e-9)
    assert hist_b[0]["train_images"] == 32


@pytest.mark.slow
def test_negative_control_one_worker_of_twice_the_batch_differs(tmp_path):
    per_worker = launch(tmp_path, 1, "norm=bn", "results_dir=pw")
    one_worker = launch(tmp_path, 1, "norm=bn", "batch=8", "workers=1", "results_dir=ow", "optim.base_lr=0.05")
    assert per_worker.returncode == 0 and one_worker.returncode == 0, per_worker.stderr + one_worker.stderr
    (a, _), (b, _) = final_state(tmp_path, "pw", "bn_b4x2_e1_s0_sub32"), final_state(tmp_path, "ow", f"bn_b8x1_e1_s0_sub32_{protocol_hash({'base_lr': 0.05})}")
    # Same images, same LR (0.1 * 4/32 = 0.05 * 8/32), same steps: only BN's statistics differ.
    assert max_diff(a, b) > 1e-3


@pytest.mark.slow  # a real process or a composed sweep: seconds each (pytest -m 'not slow' skips it)
def test_workers_not_divisible_by_processes_is_one_clear_line(tmp_path):
    proc = launch(tmp_path, 2, "norm=bn", "workers=3")
    assert proc.returncode != 0
    assert "gnrepro: error: workers=3 cannot be split over 2 processes; use a multiple of 2" in proc.stderr
    # torchrun adds its own report of the failed child; the child itself printed no traceback
    assert "gnrepro/train.py" not in proc.stderr and "gnrepro/engine/distributed.py" not in proc.stderr


def images_by_worker(batch: list[int], hosted: range) -> dict[int, list[int]]:
    """Image i of a process's batch belongs to its hosted worker i % len(hosted)."""
    return {k: batch[j::len(hosted)] for j, k in enumerate(hosted)}


def test_each_worker_sees_the_same_images_on_one_or_two_processes():
    one = StepBatchSampler(40, 4, 4, seed=5)  # 4 workers x 4 images, 2 steps per epoch
    hosted = [hosted_workers(4, Processes(r, 2)) for r in (0, 1)]
    two = [StepBatchSampler(40, 4, 4, seed=5, hosted=h) for h in hosted]
    for epoch in (1, 2):
        for s in (one, *two):
            s.set_epoch(epoch)
        for whole, first, second in zip(one, *two):
            per_worker = images_by_worker(whole, range(4))
            assert per_worker == {**images_by_worker(first, hosted[0]), **images_by_worker(second, hosted[1])}
            assert sorted(sum(per_worker.values(), [])) == sorted(whole) and len(set(whole)) == 16
    assert len(one) == 2
    one.set_epoch(1, start_step=1)  # a resumed epoch replays only the remaining steps
    assert list(one) == list(StepBatchSampler(40, 4, 4, seed=5))[1:]


def test_workers_per_process():
    assert workers_per_process(8, Processes(0, 2)) == 4
    assert hosted_workers(8, Processes(1, 2)) == range(4, 8)
    with pytest.raises(ConfigError, match="workers=6 cannot be split over 4 processes; use a multiple of 4"):
        workers_per_process(6, Processes(0, 4))
