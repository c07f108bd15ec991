"""Progress off a terminal (issue 25): under SLURM or nohup there is no progress bar, so a log line
(step, loss, images/s, ETA) comes every ``progress_seconds`` at the read points, to the console and
train.log; a stopped run says why in train.log too."""
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from gnrepro.engine.loop import EpochMeter, ProgressLines


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_line_at_most_every_progress_seconds_with_rate_and_eta(caplog):
    clock = Clock()
    lines = ProgressLines(60, epochs=3, steps_per_epoch=100, clock=clock)
    meter = EpochMeter(loss_sum=0.0, wrong=0, seen=0, steps=0, seconds=0.0)
    caplog.set_level(logging.INFO, logger="gnrepro")
    for step in range(1, 101):  # one step a second, 8 images a step; read points every 10 steps
        clock.now, meter.steps, meter.seen, meter.seconds = float(step), step, 8 * step, float(step)
        if step % 10 == 0:
            lines.maybe(1, meter, 100, 2.5, 0.1)
    text = [r.getMessage() for r in caplog.records]
    assert len(text) == 1, text  # 60 s passed once (at step 60); step 100 is 40 s later
    # 40 steps left in epoch 1 and 200 in epochs 2-3, at 1 step/s
    assert text[0] == "epoch 1/3  step 60/100  loss 2.5000  lr 0.1  8.0 img/s  ETA 4m00s (training)"


def test_zero_seconds_gives_a_line_at_every_read_point(caplog):
    clock = Clock()
    lines = ProgressLines(0, epochs=1, steps_per_epoch=4, clock=clock)
    caplog.set_level(logging.INFO, logger="gnrepro")
    for step in (1, 2):
        lines.maybe(1, EpochMeter(0.0, 0, 4 * step, step, 2.0 * step), 4, 1.0, 0.1)
    assert [r.getMessage().split("  ")[1] for r in caplog.records] == ["step 1/4", "step 2/4"]


TINY = ("model=resnet14", "norm=gn", "batch=4", "workers=1", "data.subset=64", "data.image_size=8",
        "eval_batch=512", "log_every=1", "progress_seconds=0", "keep_checkpoint=none")


@pytest.mark.slow
def test_off_a_terminal_progress_lines_reach_the_console_and_train_log(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    # stdout is a pipe here, as under SLURM or nohup
    proc = subprocess.run([sys.executable, "-m", "gnrepro.train", *TINY, "epochs=2", "final_epochs=1"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (log,) = tmp_path.glob("outputs/runs/*/*/train.log")
    lines = [x for x in log.read_text().splitlines() if " step " in x and "ETA" in x]
    assert len(lines) == 2 * 16, lines  # 16 steps an epoch, a read point at each
    assert "epoch 1/2  step 1/16  loss " in lines[0] and " img/s  ETA " in lines[0]
    assert "epoch 2/2  step 16/16" in lines[-1] and lines[-1].endswith("ETA 0s (training)")
    assert sum(" step " in x and "ETA" in x for x in proc.stdout.splitlines()) == 32  # the console has them too


@pytest.mark.slow
def test_the_stop_message_is_written_to_train_log(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "gnrepro.train", *TINY, "epochs=3"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while not any("step 2/16" in p.read_text() for p in tmp_path.glob("outputs/runs/*/*/train.log")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 3, err
    stopped = err.strip().splitlines()[-1]
    assert stopped.startswith("gnrepro: stopped: SIGTERM received: checkpoint saved at epoch 1")
    (log,) = tmp_path.glob("outputs/runs/*/*/train.log")
    assert log.read_text().rstrip().endswith(stopped)  # the same line, last in the log
    assert out.count(stopped) == 0 and err.count(stopped) == 1  # printed once on the console
