"""Issue 27, item 4: ``precision``, ``channels_last`` and ``compile`` through the trainer's command line.

Each run is ``python -m gnrepro.train`` in a real process, started through a small wrapper that
watches every training convolution from the outside (its output dtype and its input's memory layout)
and, at exit, how many graphs torch.compile built: the observation is independent of the trainer's
own records, so a setting that is accepted and recorded but never applied fails. Each run must also
train: finite losses every epoch, metrics and summary written, and the run recorded under the
setting (config.yaml, and the ``_bf16``/``_fp16`` run name: precision changes results, it is part of
the run's identity).

CPU only: bf16 and fp16 autocast both run on the CPU (torch 2.x), so neither is refused there;
precision=tf32 is, in one line (CUDA tensor cores only): tests/settings covers that refusal. fp16
convolutions on the CPU are slow (a minute for this run), and compile builds C++ kernels (about two
minutes): both slow-marked.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gnrepro import runfiles
from gnrepro.engine.execution import compiler_available
from tests.test_real_runs import env

ARGS = ("model=resnet14", "norm=gn", "batch=4", "workers=2", "epochs=2", "data.subset=16", "data.image_size=10",
        "data.val_fraction=0.05", "eval_batch=512", "progress=false", "keep_checkpoint=last")

SPY = textwrap.dedent('''
    import atexit, json, os, runpy, sys
    import torch

    seen = set()
    _conv = torch.nn.Conv2d._conv_forward

    def spy(self, input, weight, bias):
        out = _conv(self, input, weight, bias)
        # training convolutions on maps with several channels and pixels (where NCHW and NHWC differ)
        if self.training and input.dim() == 4 and input.shape[1] > 1 and input.shape[-1] * input.shape[-2] > 1:
            nhwc = input.is_contiguous(memory_format=torch.channels_last) and not input.is_contiguous()
            seen.add((str(out.dtype).replace("torch.", ""), bool(nhwc), str(weight.dtype).replace("torch.", "")))
        return out

    torch.nn.Conv2d._conv_forward = spy

    @atexit.register
    def dump():
        from torch._dynamo.utils import counters
        with open(os.environ["SPY_OUT"], "w") as f:
            json.dump({"convs": sorted(seen), "graphs": int(counters["stats"].get("unique_graphs", 0))}, f)

    sys.argv = ["gnrepro.train", *sys.argv[1:]]
    runpy.run_module("gnrepro.train", run_name="__main__", alter_sys=True)
''')


def spied_run(tmp_path: Path, *overrides: str) -> tuple[dict, Path]:
    """Train in a real process under the spy; (what the spy saw, the run folder)."""
    (tmp_path / "spy.py").write_text(SPY)
    out = tmp_path / "spy.json"
    proc = subprocess.run([sys.executable, "spy.py", *ARGS, *overrides], cwd=tmp_path,
                          env={**env(), "SPY_OUT": str(out), "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (summary,) = (tmp_path / "outputs/runs").glob("*/*/summary.json")
    return json.loads(out.read_text()), summary.parent


def assert_trained(run: Path) -> dict:
    rows = runfiles.read_jsonl(run / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["train_loss"]) and 0 < r["train_loss"] < 20 for r in rows), rows
    summary = runfiles.read_summary(run)
    assert summary["status"] == "complete" and summary["epochs_done"] == 2
    return runfiles.read_config(run / "config.yaml")


@pytest.mark.slow
def test_bf16_and_channels_last_are_applied_to_every_training_convolution(tmp_path):
    # one run for both (honest: the spy sees dtype and layout separately on each convolution)
    seen, run = spied_run(tmp_path, "precision=bf16", "channels_last=true")
    # rejects: precision accepted but autocast never entered (float32 outputs); channels_last recorded but
    # the batches or the model left NCHW (a plain-contiguous input); the model itself cast to bf16 instead
    # of autocast (bf16 weights: the master weights and the optimizer must stay float32)
    assert seen["convs"] == [["bfloat16", True, "float32"]], seen
    assert seen["graphs"] == 0  # eager: nothing compiled
    config = assert_trained(run)
    assert (config["precision"], config["channels_last"], config["compile"]) == ("bf16", True, "off")
    assert run.name.endswith("_bf16")
    model = runfiles.load_checkpoint(run / "last.pt")["model"]
    assert {str(v.dtype) for v in model.values() if v.is_floating_point()} == {"torch.float32"}


@pytest.mark.slow  # fp16 convolutions on the CPU: about a minute
def test_fp16_runs_on_the_cpu_with_a_loss_scaler(tmp_path):
    """fp16 is not refused on the CPU: autocast runs CPU convolutions in float16 and the GradScaler
    works there too. Rejects: fp16 without loss scaling (no scaler state in the checkpoint), or fp16
    accepted but run in float32."""
    seen, run = spied_run(tmp_path, "precision=fp16")
    assert seen["convs"] == [["float16", False, "float32"]], seen
    config = assert_trained(run)
    assert config["precision"] == "fp16" and run.name.endswith("_fp16")
    scaler = runfiles.load_checkpoint(run / "last.pt")["scaler"]
    assert scaler is not None and 0 < scaler["scale"] <= 2.0 ** 16, scaler  # GradScaler starts at 2**16


@pytest.mark.slow  # Inductor builds C++ kernels: about two minutes on this machine
@pytest.mark.skipif(not compiler_available(), reason="torch.compile on the CPU needs a C++ compiler")
def test_compile_default_really_compiles_and_trains(tmp_path):
    # rejects: compile=default accepted and recorded, but the eager model trained (no graph built)
    seen, run = spied_run(tmp_path, "compile=default")
    assert seen["graphs"] >= 1, seen
    config = assert_trained(run)
    assert config["compile"] == "default" and config["precision"] == "fp32"
    assert not run.name.endswith(("_bf16", "_fp16"))  # compile is rounding only: not in the run's name


def test_tf32_on_the_cpu_is_refused_in_one_line(compose_cfg):
    """The one precision the CPU refuses: tf32 is a CUDA tensor-core mode. (Rejects: a tf32 run that
    silently trains in fp32 on the CPU under a tf32 label.)"""
    from gnrepro.errors import ConfigError
    from gnrepro.settings.validate import validate

    with pytest.raises(ConfigError) as err:
        validate(compose_cfg("precision=tf32", "device=cpu"))
    assert str(err.value).startswith("precision=tf32 runs float32 convolutions on a CUDA GPU") and "\n" not in str(err.value)
