"""A sweep through the shipped SLURM launcher config on a real (local, one-node) SLURM cluster, then
the report built from the run folders its jobs wrote."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.helpers import TINY, launcher

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_sweep_of_four_runs_through_the_slurm_launcher_then_the_report(cluster, tmp_path):
    # gpus_per_node=0 (not null) on purpose: a CPU user's other spelling must submit too.
    proc = subprocess.run([sys.executable, "-m", "gnrepro.train", "-m", *launcher(cluster.partition, gpus=0), *TINY,
                           "norm=bn,gn", "batch=4,8", "epochs=1", "results_dir=sweep"],
                          cwd=tmp_path, env=cluster.env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    (script,) = (tmp_path / "sweep" / ".submitit").glob("*/*_submission.sh")  # one array job of 4 tasks
    sbatch = script.read_text()
    for flag in ("--array=0-3%", "--partition=local", "--ntasks-per-node=1", "--cpus-per-task=1",
                 "--signal=USR2@120", "--time=10"):
        assert flag in sbatch, flag
    runs = sorted((tmp_path / "sweep" / "digits_resnet14").iterdir())
    assert [r.name for r in runs] == ["bn_b4x2_e1_s0_sub32", "bn_b8x2_e1_s0_sub32", "gn32_b4x2_e1_s0_sub32", "gn32_b8x2_e1_s0_sub32"]
    for run in runs:
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "complete" and summary["epochs_done"] == 1, run
        assert (run / "metrics.jsonl").read_text().count("\n") == 1

    report = subprocess.run([sys.executable, "-m", "gnrepro.report", "--runs", "sweep", "--out", "reports"],
                            cwd=tmp_path, env=cluster.env, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    table = (tmp_path / "reports" / "digits_resnet14_w2_e1_sub32" / "table2_batch_size.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith(("| BN |", "| GN |"))]
    assert sorted(r.split("|")[1:3] for r in rows) == [[" BN ", " 4 "], [" BN ", " 8 "], [" GN ", " 4 "], [" GN ", " 8 "]]


def test_a_request_the_cluster_cannot_take_is_one_line_before_anything_is_submitted(cluster, tmp_path):
    overrides = [*launcher("nosuch"), *TINY, "norm=bn,gn", "epochs=1", "results_dir=sweep"]
    proc = subprocess.run([sys.executable, "-m", "gnrepro.train", "-m", *overrides], cwd=tmp_path, env=cluster.env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "gnrepro: error: SLURM would refuse the jobs (sbatch --test-only: invalid partition specified: nosuch); check "
        "hydra.launcher.partition, account, cpus_per_task, mem_gb, gpus_per_node, tasks_per_node and timeout_min "
        "against `sinfo` (docs/clusters.md)"]
    assert list(tmp_path.iterdir()) == [] and cluster.jobs() == []


def test_without_sbatch_the_slurm_launcher_is_one_line(tmp_path):
    env = {**os.environ, "PATH": str(Path(sys.executable).parent), "WANDB_MODE": "disabled"}  # no sbatch on it
    proc = subprocess.run([sys.executable, "-m", "gnrepro.train", "-m", *launcher("local"), *TINY, "epochs=1"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "gnrepro: error: hydra/launcher=slurm needs sbatch, which is not installed here: run the command on a machine "
        "of the SLURM cluster (its login node), or drop hydra/launcher=slurm to train here"]
    assert list(tmp_path.iterdir()) == []
