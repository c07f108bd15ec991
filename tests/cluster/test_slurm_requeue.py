"""Preemption and the time-limit signal on a real SLURM cluster: the job is requeued by SLURM
(``scontrol requeue``: SIGTERM, then queued again) and later sent the signal the launcher config
asks SLURM to send before the time limit (``#SBATCH --signal=USR2@120``), on which submitit
requeues it; both times it comes back, resumes from its checkpoint and ends exactly where an
uninterrupted run ends (``deterministic=true``)."""
import subprocess

import pytest
import torch

from cluster.helpers import TINY, final_state, launcher, train_cmd, wait_for
from gnrepro.runfiles import read_jsonl

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ARGS = (*TINY, "norm=gn", "epochs=6")
RUN = "digits_resnet14/gn32_b4x2_e6_s0_sub32"


def test_requeued_and_signalled_job_resumes_to_the_uninterrupted_result(cluster, tmp_path):
    run = tmp_path / "slurm" / RUN
    with open(tmp_path / "launcher.out", "w") as out, open(tmp_path / "launcher.err", "w") as err:
        sweep = subprocess.Popen(train_cmd("-m", *launcher(cluster.partition), *ARGS, "results_dir=slurm"),
                                 cwd=tmp_path, env=cluster.env, stdout=out, stderr=err, text=True)
    ref = None
    try:
        def epochs_done():
            return len(read_jsonl(run / "metrics.jsonl")) if (run / "metrics.jsonl").exists() else 0

        def resumed():
            return (run / "train.log").read_text().count("resuming ") if (run / "train.log").exists() else 0

        wait_for(lambda: epochs_done() >= 1, 240, "epoch 1 of the job", sweep)
        (job,) = cluster.jobs()
        cluster.run("scontrol", "requeue", job)  # preemption: SIGTERM to the job, then it is queued again
        # The uninterrupted reference, on this machine, while the job waits to run again.
        with open(tmp_path / "ref.err", "w") as ref_err:
            ref = subprocess.Popen(train_cmd(*ARGS, "results_dir=ref"), cwd=tmp_path, env=cluster.env,
                                   stdout=subprocess.DEVNULL, stderr=ref_err)
        wait_for(lambda: resumed() == 1 and epochs_done() >= 3, 240, "the requeued job to resume", sweep)
        assert cluster.jobs() == [job]
        cluster.run("scancel", "--signal=USR2", job)  # what SLURM sends 120 s before the time limit
        wait_for(lambda: sweep.poll() is not None, 300, "the sweep to end")
        assert ref.wait(timeout=300) == 0, (tmp_path / "ref.err").read_text()[-3000:]
    finally:
        for proc in (sweep, ref):
            if proc is not None and proc.poll() is None:
                proc.kill()
    assert sweep.returncode == 0, (tmp_path / "launcher.err").read_text()[-3000:]

    # What happened, in the job's own logs (stdout and stderr, appended across its three starts) and the run's.
    text = "".join(p.read_text() for p in (tmp_path / "slurm" / ".submitit" / job).glob("*_0_log.*"))
    assert "CANCELLED AT" in text and "DUE TO JOB REQUEUE" in text
    assert "gnrepro: stopped: SIGTERM received: checkpoint saved at epoch " in text
    assert "Caught signal SIGUSR2" in text and f"Requeued job {job} (2 remaining timeouts)" in text
    train_log = (run / "train.log").read_text()
    resumes = [line for line in train_log.splitlines() if "resuming " in line]
    assert len(resumes) == 2, resumes
    assert " at epoch 2," in resumes[0]  # the requeue came during epoch 2: resumed there, not from epoch 1
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6]

    (a, hist_a), (b, hist_b) = final_state(run), final_state(tmp_path / "ref" / RUN)
    assert all(torch.equal(a[k], b[k]) for k in a), "the interrupted run's weights differ from the uninterrupted one's"
    for key in ("train_loss", "train_error", "val_error", "val_loss", "lr"):
        assert [r[key] for r in hist_a] == [r[key] for r in hist_b], key
