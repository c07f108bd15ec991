"""scripts/bench_input_pipeline.py reports the loader's and the model's images/s and their ratio."""
import importlib.util
import re
import subprocess
import sys
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


DALI = importlib.util.find_spec("nvidia.dali") is not None
SMALL = ["batch=2", "norm=gn", "data.train_crop=32", "data.eval_resize=36", "data.eval_crop=32", "data.num_workers=1",
         "device=cpu"]


@pytest.mark.skipif(not DALI, reason="NVIDIA DALI is not installed (pip install 'gnrepro[dali]'; CI does not)")
def test_the_dali_anchor_reads_the_same_files_and_normalizes_like_the_loader(tmp_path):
    """DALI's pipeline (on the CPU here, device="mixed" on a GPU) reads every train file once an epoch
    with its own label, and hands over float CHW crops normalized with the data set's mean and std."""
    from gnrepro.data import fake

    fake.make_imagenet(tmp_path, classes=3, train_per_class=4, size=(64, 48))
    cfg = bench.compose_train(["data=imagenet", f"data.root={tmp_path}", *SMALL])
    import torch

    batches = bench.dali_batches(cfg, torch.device("cpu"))
    epoch = [next(batches) for _ in range(6)]  # 12 images, 2 a batch
    assert all(images.shape == (2, 3, 32, 32) and images.dtype == torch.float32 for images, _ in epoch)
    assert sorted(int(label) for _, labels in epoch for label in labels) == sorted([0, 1, 2] * 4)
    mean, std = torch.tensor(cfg.data.mean).view(1, 3, 1, 1), torch.tensor(cfg.data.std).view(1, 3, 1, 1)
    pixels = torch.cat([images for images, _ in epoch]) * std + mean  # back to [0, 1] if normalized as the loader does
    assert pixels.min() >= -1e-4 and pixels.max() <= 1 + 1e-4 and pixels.std() > 0.05


@pytest.mark.slow
@pytest.mark.skipif(not DALI, reason="NVIDIA DALI is not installed (pip install 'gnrepro[dali]'; CI does not)")
def test_bench_prints_the_dali_anchor_beside_the_loaders(capsys):
    assert bench.main(["--fake-images", "16", "--fake-size", "64", "48", "--steps", "2", "--model-steps", "1",
                       "--loaders", "pil,gpu", "--dali", *SMALL]) == 0
    out = capsys.readouterr().out
    pil = float(re.search(r"data.loader=pil\s+:\s+([\d.]+) images/s", out).group(1))
    gpu = float(re.search(r"data.loader=gpu\s+:\s+([\d.]+) images/s", out).group(1))
    dali, ratio = map(float, re.search(r"anchor: NVIDIA DALI [\d.]+, decode on cpu :\s+([\d.]+) images/s  \(([\d.]+)x pil",
                                       out).groups())
    assert abs(ratio - dali / pil) < 0.01 * ratio + 0.01
    to_dali = float(re.search(r"data.loader=gpu / DALI = ([\d.]+)", out).group(1))
    assert abs(to_dali - gpu / dali) < 0.01 * to_dali + 0.01


@pytest.mark.slow  # a fresh interpreter importing torch: seconds
def test_dali_without_dali_installed_is_refused_in_one_line():
    hide = ("import runpy, sys; sys.modules['nvidia.dali'] = None; sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", hide, str(ROOT / "scripts" / "bench_input_pipeline.py"), "--dali",
                           "--fake-images", "8"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("gnrepro: error: --dali needs NVIDIA DALI") and proc.stderr.count("\n") == 1


@pytest.mark.slow
@pytest.mark.skipif(not DALI, reason="NVIDIA DALI is not installed (pip install 'gnrepro[dali]'; CI does not)")
def test_dali_on_a_data_set_that_is_not_photos_is_refused_in_one_line():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_input_pipeline.py"), "--dali", "data=digits"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr == "gnrepro: error: --dali times photo data sets (imagenet, " \
                                                   "imagenette, pets), not data=digits\n"
