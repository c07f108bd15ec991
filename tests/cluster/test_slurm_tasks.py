"""Two processes in one SLURM job (``hydra.launcher.tasks_per_node=2``): each task reads SLURM's
variables (gnrepro.engine.distributed, through submitit), they join one gloo process group and train one
run with per-worker BN, equal to the one-process emulation within test_distributed.py's tolerance."""
import json

import pytest

from cluster.helpers import TINY, final_state, launcher, max_diff, train

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_two_tasks_of_one_job_equal_one_process_with_two_workers(cluster, tmp_path, one_process_bn):
    proc = train(tmp_path, "-m", *launcher(cluster.partition, tasks=2), *TINY, "norm=bn", "epochs=1",
                 "results_dir=slurm", env=cluster.env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (job_dir,) = [d for d in (tmp_path / "slurm" / ".submitit").iterdir() if d.is_dir()]
    assert "--ntasks-per-node=2" in next(job_dir.glob("*_submission.sh")).read_text()
    assert sorted(p.name.split("_")[-2] for p in job_dir.glob("*_log.err")) == ["0", "1"]  # one log per task

    run = tmp_path / "slurm" / "digits_resnet14" / "bn_b4x2_e1_s0_sub32"
    assert json.loads((run / "summary.json").read_text())["processes"] == 2
    (a, hist_a), (b, hist_b) = final_state(one_process_bn), final_state(run)
    assert max_diff(a, b) <= 1e-5, max_diff(a, b)
    assert max_diff(a, b, lambda k: "running" in k) <= 1e-5
    assert hist_a[0]["train_loss"] == pytest.approx(hist_b[0]["train_loss"], abs=1e-5)
    assert hist_a[0]["val_error"] == pytest.approx(hist_b[0]["val_error"], abs=1e-9)
    assert hist_b[0]["train_images"] == 32
