"""Process-wide execution switches: ``precision=fp32`` is IEEE float32 (torch's default runs cuDNN's
fp32 convolutions in TF32 on Ampere and later GPUs), ``precision=tf32`` is TF32 and says so in the
run's name. The switches are torch's own; their effect on a GPU is what the device check measures."""
import pytest
import torch
from omegaconf import OmegaConf

from gnrepro.engine.execution import build_execution
from gnrepro.runs.identity import precision_tag


@pytest.fixture
def torch_default_tf32():
    """torch's default state, cuDNN convolutions in TF32, as a child switch set on its own (as a
    library or a user's script may have set it: under a parent's new value it keeps its own, and in
    torch 2.11 even the untouched default does); restored after the test."""
    switches = (torch.backends.cudnn, torch.backends.cudnn.conv, torch.backends.cudnn.rnn, torch.backends.cuda.matmul)
    saved = [s.fp32_precision for s in switches]
    torch.backends.cudnn.conv.fp32_precision = torch.backends.cudnn.rnn.fp32_precision = "tf32"
    yield
    for switch, value in zip(switches, saved):
        switch.fp32_precision = value


@pytest.mark.parametrize("precision,math", [("fp32", "ieee"), ("tf32", "tf32"), ("bf16", "ieee"), ("fp16", "ieee")])
def test_each_precision_sets_the_float32_math_of_convolutions_and_matmuls(torch_default_tf32, precision, math):
    cfg = OmegaConf.create({"precision": precision, "deterministic": False, "channels_last": False, "compile": "off"})
    build_execution(cfg, torch.device("cpu"))
    assert torch.backends.cudnn.conv.fp32_precision == math
    assert torch.backends.cudnn.rnn.fp32_precision == math
    assert torch.backends.cuda.matmul.fp32_precision == math


def test_torch_left_alone_would_run_fp32_convolutions_in_tf32():
    """The negative control of the test above: without gnrepro's switch, 'fp32' would be TF32 on a GPU."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cudnn.conv.fp32_precision)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "tf32"


def test_tf32_is_part_of_the_run_name_and_fp32_is_not():
    assert precision_tag("tf32") == "_tf32" and precision_tag("fp32") == ""


def test_tf32_on_the_cpu_is_one_line(compose_cfg):
    from gnrepro.errors import ConfigError
    from gnrepro.settings.validate import validate

    with pytest.raises(ConfigError, match="precision=tf32 runs float32 convolutions on a CUDA GPU"):
        validate(compose_cfg("precision=tf32", "device=cpu"))
