"""keep_checkpoint (issue 25): last.pt while a run trains; once it completes, only what the policy
keeps: weights.pt (the final model, no optimizer state: about half of last.pt), last.pt, or nothing."""
import os
import subprocess
import sys

import pytest
import torch

from gnrepro import runfiles
from gnrepro.engine import checkpoint
from gnrepro.runs.identity import is_runtime
from gnrepro.weights.formats import read_torch

TINY = ("model=resnet14", "norm=gn", "batch=4", "workers=1", "epochs=2", "final_epochs=1", "data.subset=16",
        "data.image_size=8", "eval_batch=512", "progress=false")
RUN = "digits_resnet14/gn32_b4x1_e2_s0_sub16"


def train(tmp_path, *overrides):
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "gnrepro.train", *TINY, *overrides], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)


def test_the_policy_is_a_runtime_key_and_unknown_values_are_refused(compose_cfg):
    from gnrepro.settings.validate import validate
    from gnrepro.errors import ConfigError

    assert compose_cfg().keep_checkpoint == "weights" and is_runtime("keep_checkpoint")
    with pytest.raises(ConfigError, match="keep_checkpoint must be one of last, weights, none"):
        validate(compose_cfg("keep_checkpoint=all"))


@pytest.mark.parametrize("keep", ["weights", "last", "none"])
def test_after_completion_only_what_the_policy_keeps(tmp_path, keep):
    model = torch.nn.Linear(3, 2)
    runfiles.save_checkpoint(tmp_path / runfiles.CHECKPOINT, {"model": model.state_dict()})
    checkpoint.save_final_weights(tmp_path, keep, model, {"seed": 0})
    assert (tmp_path / runfiles.CHECKPOINT).exists()  # until summary.json is written, last.pt stays
    checkpoint.drop_resume_state(tmp_path, keep)
    assert sorted(p.name for p in tmp_path.iterdir()) == {"weights": ["weights.pt"], "last": ["last.pt"],
                                                         "none": []}[keep]


@pytest.mark.slow
def test_a_real_run_keeps_weights_by_default_and_last_pt_when_asked(tmp_path):
    default = train(tmp_path, "results_dir=w")
    kept = train(tmp_path, "results_dir=l", "keep_checkpoint=last")
    nothing = train(tmp_path, "results_dir=n", "keep_checkpoint=none")
    for proc in (default, kept, nothing):
        assert proc.returncode == 0, proc.stderr[-2000:]
    w, last, n = tmp_path / "w" / RUN, tmp_path / "l" / RUN, tmp_path / "n" / RUN
    assert (w / "weights.pt").is_file() and not (w / "last.pt").exists()
    assert (last / "last.pt").is_file() and not (last / "weights.pt").exists()
    assert not (n / "last.pt").exists() and not (n / "weights.pt").exists()
    for folder in (w, last, n):  # the record itself is whole whatever the policy
        assert runfiles.run_status(folder).status == "complete" and (folder / "metrics.jsonl").is_file()
    # weights.pt holds the final model (the same as last.pt's, deterministic runs aside: compare shapes
    # and that it is what init= / evaluate weights= read) without the optimizer state
    tensors, config = read_torch(w / "weights.pt")
    full = runfiles.load_checkpoint(last / "last.pt")
    assert tensors.keys() == full["model"].keys() and config["keep_checkpoint"] == "weights"
    assert (w / "weights.pt").stat().st_size < 0.75 * (last / "last.pt").stat().st_size
    # a relaunch of the complete run is not trained again and does not need last.pt
    again = train(tmp_path, "results_dir=w")
    assert again.returncode == 0 and "already complete" in again.stdout + again.stderr


def test_the_finiteness_check_sees_every_float_tensor_and_reads_the_device_once(monkeypatch):
    """Before a checkpoint replaces the last good one (issue 23): a NaN or inf in any weight or
    floating-point buffer is seen, integer buffers are not read, and the flag crosses to the host
    once for the whole state (reading it per tensor synced ~320 times on a ResNet-50)."""
    from gnrepro.models.resnet import ResNet

    model = ResNet(50, norm=torch.nn.BatchNorm2d, conv=torch.nn.Conv2d, num_classes=10)
    floats = [t for t in model.state_dict().values() if t.is_floating_point()]
    assert len(floats) > 300
    reads = []
    real_bool = torch.Tensor.__bool__
    monkeypatch.setattr(torch.Tensor, "__bool__", lambda t: reads.append(t.numel()) or real_bool(t))
    monkeypatch.setattr(torch.Tensor, "item", lambda t: reads.append(t.numel()) or torch.Tensor.tolist(t))
    assert checkpoint.all_finite(model) is True
    assert len(reads) == 1  # one flag for the whole state, not one per tensor
    for name, bad in [("layer4.2.bn3.running_var", float("nan")), ("fc.weight", float("inf")),
                      ("conv1.weight", float("-inf"))]:
        tensor = model.state_dict()[name]
        kept = tensor.flatten()[-1].item()
        tensor.flatten()[-1] = bad
        assert checkpoint.all_finite(model) is False, name
        tensor.flatten()[-1] = kept
    model.bn1.num_batches_tracked.fill_(2**62)  # an integer buffer is never a reason to refuse
    assert checkpoint.all_finite(model) is True
