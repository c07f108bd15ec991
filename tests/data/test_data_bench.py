"""scripts/bench_input_pipeline.py reports the loader's and the model's images/s and their ratio."""
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("bench_input_pipeline", ROOT / "scripts" / "bench_input_pipeline.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


# A benchmark script times ResNet-50 steps (~10 s of CPU each test): the slow suite runs it (docs/testing.md).
@pytest.mark.slow
def test_bench_reports_both_rates_and_the_ratio(capsys):
    assert bench.main(["--fake-images", "8", "--fake-size", "64", "48", "--steps", "2", "--model-steps", "1", "batch=2", "norm=gn",
                       "data.train_crop=32", "data.eval_resize=36", "data.eval_crop=32", "data.num_workers=0",
                       "device=cpu"]) == 0
    out = capsys.readouterr().out
    assert "tensor [2, 3, 32, 32]" in out
    pipeline = float(re.search(r"input pipeline :\s+([\d.]+) images/s", out).group(1))
    model = float(re.search(r"model \(resnet50, gn, cpu, precision=fp32 channels_last=False compile=off\) :\s+([\d.]+) images/s", out).group(1))
    ratio = float(re.search(r"ratio pipeline/model = ([\d.]+)", out).group(1))
    assert pipeline > 0 and model > 0 and abs(ratio - pipeline / model) < 0.01 * ratio + 0.01


@pytest.mark.slow
def test_bench_times_the_loaders_side_by_side(capsys):
    assert bench.main(["--fake-images", "8", "--fake-size", "64", "48", "--steps", "2", "--model-steps", "1",
                       "--loaders", "pil,pil_uint8", "batch=2", "norm=gn", "data.train_crop=32",
                       "data.eval_resize=36", "data.eval_crop=32", "data.num_workers=0", "device=cpu"]) == 0
    out = capsys.readouterr().out
    pil = float(re.search(r"data.loader=pil\s+:\s+([\d.]+) images/s  \(1.00x pil", out).group(1))
    uint8 = re.search(r"data.loader=pil_uint8 :\s+([\d.]+) images/s  \(([\d.]+)x pil", out)
    assert pil > 0 and abs(float(uint8.group(2)) - float(uint8.group(1)) / pil) < 0.01 * float(uint8.group(2)) + 0.01
    assert "data.loader=pil)" in out and "tensor [2, 3, 32, 32]" in out
